"""Output rows: one record's id, input columns and the model's result, as every sink writes them.

Built by the driver's merger, or by a worker that encodes its task's rows itself; both call
``build_row`` so the bytes are the same whoever builds them.
"""

from __future__ import annotations

from typing import Any

def build_row(id_column: str, text_column: str, own_rows: bool, rid: Any, text: Any, extra: dict[str, Any],
              out: dict[str, Any], renamed: set[str]) -> dict[str, Any]:
    """One output row: id, text, the other input columns, then the model's result columns.

    Any input column named like a result column, the id and text columns included (translating
    back with ``--text-column translation``), is kept as ``input_<name>`` (its name is added to
    ``renamed``). ``own_rows``: the result is the whole row. Model outputs may hold numpy arrays
    and scalars: every sink writes them natively."""
    if own_rows:
        return out
    row = {id_column: rid, text_column: text, **extra}
    if row.keys().isdisjoint(out):
        return {**row, **out}
    renamed.update(row.keys() & out.keys())  # an input column named like a result column
    return {**{(f"input_{k}" if k in out else k): v for k, v in row.items()}, **out}
