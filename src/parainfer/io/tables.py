"""The data kinds ``parainfer.predict`` takes and gives back: a list of texts, a pandas DataFrame,
a pyarrow Table. ``texts_of`` takes the texts out; ``attach_results`` puts the results back in
the caller's kind, in input order (pandas and pyarrow are imported only when given)."""

from __future__ import annotations

from typing import Any

from parainfer.errors import UsageError

ERROR_COLUMN = "error"
Results = list[dict[str, Any] | None]
Failures = list[tuple[int, str]]


def _kind(data: Any) -> str:
    module = type(data).__module__.split(".")[0]
    if module == "pandas" and type(data).__name__ == "DataFrame":
        return "pandas"
    if module == "pyarrow" and type(data).__name__ == "Table":
        return "arrow"
    if isinstance(data, (list, tuple)):
        return "list"
    hint = " (wrap one text in a list: [text])" if isinstance(data, str) else ""
    raise UsageError(f"cannot predict on a {type(data).__name__}{hint}; expected a list of texts, "
                     "a pandas DataFrame or a pyarrow Table")


def describe(value: Any) -> str:
    """A short phrase for ``value`` in an error message, never its repr (a table's is many lines):
    "a pandas DataFrame of 100 rows x 2 columns", "a pyarrow Table of ...", "a list of 3 items",
    else "a <type name>"."""
    kind = type(value)
    name = f"{kind.__module__.split('.')[0]} {kind.__name__}" if kind.__module__ != "builtins" else kind.__name__
    shape = getattr(value, "shape", None)
    if isinstance(shape, tuple) and len(shape) == 2 and all(isinstance(n, int) for n in shape):
        return f"a {name} of {_count(shape[0], 'row')} x {_count(shape[1], 'column')}"
    if isinstance(value, (list, tuple, dict, set)):
        return f"a {name} of {_count(len(value), 'item')}"
    return f"a {name}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def texts_of(data: Any, text_column: str) -> list[Any]:
    """The texts of ``data`` in order; raises UsageError for another kind of data or a table
    without ``text_column`` (the message lists its columns)."""
    kind = _kind(data)
    if kind == "list":
        return list(data)
    columns = list(data.columns) if kind == "pandas" else data.column_names
    if text_column not in columns:
        raise UsageError(f"table has no text column {text_column!r}; columns found: "
                         f"{', '.join(map(repr, columns))} (choose one with text_column=)")
    return data[text_column].tolist() if kind == "pandas" else data.column(text_column).to_pylist()


def result_columns(results: Results) -> list[str]:
    """Result keys in order of first appearance."""
    seen: dict[str, None] = {}
    for r in results:
        if r:
            seen.update(dict.fromkeys(r))
    return list(seen)


def attach_results(data: Any, results: Results, failures: Failures, with_errors: bool) -> Any:
    """``data``'s kind with the results in input order (None results where a record failed).

    Args:
        results: per input position, the result dict, or None for a failed record.
        failures: (position, reason) of each failed record.
        with_errors: add the reason under ERROR_COLUMN (None where the record succeeded).
    """
    kind = _kind(data)
    names = result_columns(results)
    reasons = dict(failures)
    if kind == "list":
        rows = [r if r is not None else dict.fromkeys(names) for r in results]
        if with_errors:
            rows = [{**r, ERROR_COLUMN: reasons.get(i)} for i, r in enumerate(rows)]
        return rows
    columns = {name: [r.get(name) if r else None for r in results] for name in names}
    if with_errors:
        columns[ERROR_COLUMN] = [reasons.get(i) for i in range(len(results))]
    return _pandas(data, columns) if kind == "pandas" else _arrow(data, columns)


def _renamed(existing: list[str], new: dict[str, list[Any]]) -> dict[str, str]:
    """Input columns named like a result column become ``input_<name>`` (as in output files)."""
    return {c: f"input_{c}" for c in existing if c in new}


def _pandas(df: Any, columns: dict[str, list[Any]]) -> Any:
    import pandas as pd

    out = df.rename(columns=_renamed(list(df.columns), columns))
    added = pd.DataFrame({k: pd.Series(v, index=df.index, dtype=object if k == ERROR_COLUMN or _has_arrays(v)
                                       else None) for k, v in columns.items()}, index=df.index)
    return pd.concat([out, added], axis=1)


def _arrow(table: Any, columns: dict[str, list[Any]]) -> Any:
    import pyarrow as pa

    out = table.rename_columns([_renamed(table.column_names, columns).get(c, c) for c in table.column_names])
    for name, values in columns.items():
        if _has_arrays(values):
            values = [v.tolist() if hasattr(v, "tolist") else v for v in values]
        out = out.append_column(name, pa.array(values))
    return out


def _has_arrays(values: list[Any]) -> bool:
    return any(hasattr(v, "shape") and getattr(v, "ndim", 0) > 0 for v in values)
