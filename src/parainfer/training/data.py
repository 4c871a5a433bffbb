"""Labelled training data: read (text, label) pairs from JSONL/CSV/Parquet, quarantine bad rows,
and split them into training and validation sets with a fixed seed.

A row is bad when its text is missing, null, not a string or empty (the same checks as
``parainfer run``, by ``io.sources.open_source``), or its label is missing, null, empty or not a
string, number or boolean; it goes to the errors file with its line and reason, and training goes
on without it.

Labels keep their type: a JSONL ``1`` stays the integer 1 through training, the manifest and
``run``'s output, and ``"1"`` stays a string. A label column holds one type (all strings, all
integers, all floats or all booleans); a file that mixes them (``1`` and ``"1"``) is refused with
both values and their lines, never merged. CSV labels are strings.

The least data: 2 classes, and 2 rows of every class (the stratified split holds out at least
one row of each class and trains on at least one); ``split`` refuses less with one line.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field

import numpy as np

from parainfer.errors import UsageError
from parainfer.io.sinks import ErrorSink
from parainfer.records import RecordError

Label = str | int | float | bool
"""A class label as read: a string (stripped), an integer, a float or a boolean."""

LABEL_TYPES = {bool: "boolean", int: "integer", float: "float", str: "string"}


@dataclass
class LabelledData:
    """Clean (text, label) pairs in input order.

    Attributes:
        texts: N strings.
        labels: N labels, all of one type (``LABEL_TYPES``): strings stripped, numbers and
            booleans as in the input (JSONL ``1`` stays the integer 1).
        errors: rows that were left out, as RecordErrors (written to the errors file).
    """

    texts: list[str] = field(default_factory=list)
    labels: list[Label] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)


def label_reason(row: dict, label_column: str) -> str | None:
    """Why a row's label is unusable (missing, null, NaN, empty, not a string, number or boolean),
    or None when it is fine."""
    if label_column not in row:
        return f"missing label column {label_column!r} (columns found: {', '.join(map(repr, row)) or 'none'})"
    value = row[label_column]
    if value is None:
        return f"null label in column {label_column!r}"
    if type(value) not in LABEL_TYPES:
        return (f"label in column {label_column!r} is {type(value).__name__} {value!r:.40}, expected a string, "
                "number or boolean")
    if isinstance(value, float) and value != value:  # NaN from CSV/Parquet
        return f"null (NaN) label in column {label_column!r}"
    if not str(value).strip():
        return f"empty label in column {label_column!r}: {value!r}"
    return None


def read_labelled(path: str, text_column: str = "text", label_column: str = "label",
                  id_column: str = "id") -> LabelledData:
    """Read every row of ``path`` (.jsonl, .csv or .parquet).

    Returns:
        LabelledData with the usable rows and a RecordError for each bad one.

    Raises:
        UsageError: unreadable file, unknown extension, no text column (from ``open_source``),
            no row has the label column (the message lists the columns found), no row has a
            usable label (the message names the label column and the first bad row), or the labels mix
            types (the message names the first value of each of two types and their lines).
    """
    from parainfer.io.sources import open_source

    if path.endswith(".txt") or path == "-":
        raise UsageError(f"training input {path!r} must be .jsonl, .csv or .parquet with a label column")
    source = open_source(path, text_column=text_column, id_column=id_column)
    data = LabelledData()
    first: tuple[Label, int] | None = None  # the first label and its line: its type is the column's
    has_label_column = False  # in any row (else --label-column is wrong: list the columns found)
    for item in source:
        if isinstance(item, RecordError):
            data.errors.append(item)
            continue
        row = {**item.extra, text_column: item.text}
        if label_column == id_column:
            row[label_column] = item.id
        has_label_column = has_label_column or label_column in row
        reason = label_reason(row, label_column)
        if reason:
            data.errors.append(RecordError(item.seq, item.line, item.id, reason, item.text))
            continue
        label = row[label_column]
        label = label.strip() if isinstance(label, str) else label
        if first is None:
            first = (label, item.line)
        elif type(label) is not type(first[0]):
            raise UsageError(f"label column {label_column!r} mixes types: {_shown(first[0])} "
                             f"({LABEL_TYPES[type(first[0])]}, line {first[1]}) and {_shown(label)} "
                             f"({LABEL_TYPES[type(label)]}, line {item.line}); labels keep their type, so give "
                             "every label one type (e.g. all strings)")
        data.texts.append(item.text)
        data.labels.append(label)
    if not data.texts and not data.errors:
        raise UsageError(f"{path!r} has no rows; training needs at least 2 classes with 2 rows each")
    if source.columns and not has_label_column:
        raise UsageError(f"input {path!r} has no label column {label_column!r}; columns found: "
                         f"{', '.join(map(repr, source.columns))} (choose one with --label-column)")
    if not data.texts:
        raise UsageError(f"no usable rows in {path!r}: every row lacks a text in {text_column!r} or a label in "
                         f"{label_column!r} ({len(data.errors):,} bad rows; the first, line {data.errors[0].line}: "
                         f"{data.errors[0].reason})")
    return data


def _shown(label: Label) -> str:
    """A label as JSON writes it (quotes on strings, so 1 and "1" read apart), at most 40 characters."""
    text = json.dumps(label, ensure_ascii=False)
    return text if len(text) <= 40 else text[:37] + "..."


def write_errors(errors: list[RecordError], path: str) -> int:
    """Write the bad rows to ``path`` (JSONL: line, id, reason, text); returns how many."""
    sink = ErrorSink(path)
    with sink:
        sink.write(errors)
    return sink.count


def split(labels: list[Label], validation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of row indices, stratified by label.

    The validation set is ``ceil(validation * N)`` rows, raised to one row per class when that
    is fewer (and capped so training keeps one row per class), so both sets hold every class.

    Args:
        labels: N labels, all of one type.
        validation: fraction in (0, 1) held out for validation.
        seed: ``random_state`` of scikit-learn's ``train_test_split``.

    Returns:
        (train indices, validation indices), each sorted ascending.

    Raises:
        UsageError: ``validation`` outside (0, 1), fewer than 2 classes, or a class with only one
            row (the message names how many and the first few, and what is needed).
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < validation < 1.0:
        raise UsageError(f"--validation {validation} must be a fraction between 0 and 1 (exclusive), e.g. 0.2")
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) < 2:
        raise UsageError(f"training needs at least 2 classes; found 1, {_shown(classes.tolist()[0])}, in all "
                         f"{len(labels):,} rows")
    thin = classes[counts < 2].tolist()
    if thin:
        names = ", ".join(_shown(c) for c in thin[:3]) + (f" and {len(thin) - 3:,} more" if len(thin) > 3 else "")
        raise UsageError(f"{len(thin):,} of {len(classes):,} classes have only 1 row ({names}); training needs at "
                         "least 2 rows of every class (one to train on, one to validate): add rows or drop those "
                         "classes")
    n, c = len(labels), len(classes)
    n_val = min(max(math.ceil(validation * n), c), n - c)
    idx = np.arange(n)
    tr, va = train_test_split(idx, test_size=n_val, random_state=seed, stratify=np.asarray(labels))
    return np.sort(tr), np.sort(va)
