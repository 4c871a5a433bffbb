"""Labelled training data: read (text, label) pairs from JSONL/CSV/Parquet, quarantine bad rows,
and split them into training and validation sets with a fixed seed.

A row is bad when its text is missing, null, not a string or empty (the same checks as
``parainfer run``, by ``io.sources.open_source``), or its label is missing, null or empty; it goes
to the errors file with its line and reason, and training goes on without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from parainfer.errors import UsageError
from parainfer.io.sinks import ErrorSink
from parainfer.records import RecordError


@dataclass
class LabelledData:
    """Clean (text, label) pairs in input order.

    Attributes:
        texts: N strings.
        labels: N label strings (numbers in the input become their string form: 1 -> "1").
        errors: rows that were left out, as RecordErrors (written to the errors file).
    """

    texts: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)


def label_reason(row: dict, label_column: str) -> str | None:
    """Why a row's label is unusable (missing, null, empty, not a scalar), or None when it is fine."""
    if label_column not in row:
        return f"missing label column {label_column!r} (columns found: {', '.join(map(repr, row)) or 'none'})"
    value = row[label_column]
    if value is None:
        return f"null label in column {label_column!r}"
    if isinstance(value, (dict, list)):
        return f"label in column {label_column!r} is {type(value).__name__} {value!r:.40}, expected a string or number"
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
            or no row has a usable label (the message names the label column).
    """
    from parainfer.io.sources import open_source

    if path.endswith(".txt") or path == "-":
        raise UsageError(f"training input {path!r} must be .jsonl, .csv or .parquet with a label column")
    source = open_source(path, text_column=text_column, id_column=id_column)
    data = LabelledData()
    for item in source:
        if isinstance(item, RecordError):
            data.errors.append(item)
            continue
        row = {**item.extra, text_column: item.text}
        if label_column == id_column:
            row[label_column] = item.id
        reason = label_reason(row, label_column)
        if reason:
            data.errors.append(RecordError(item.seq, item.line, item.id, reason, item.text))
        else:
            data.texts.append(item.text)
            data.labels.append(str(row[label_column]).strip())
    if not data.texts:
        raise UsageError(f"no usable rows in {path!r}: every row lacks a text in {text_column!r} or a label in "
                         f"{label_column!r} ({len(data.errors)} bad rows; see the errors file)")
    return data


def write_errors(errors: list[RecordError], path: str) -> int:
    """Write the bad rows to ``path`` (JSONL: line, id, reason, text); returns how many."""
    sink = ErrorSink(path)
    with sink:
        sink.write(errors)
    return sink.count


def split(labels: list[str], validation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded train/validation split of row indices, stratified by label where every class has
    at least two rows (else a plain shuffled split).

    Args:
        labels: N labels.
        validation: fraction in (0, 1) held out for validation.
        seed: ``random_state`` of scikit-learn's ``train_test_split``.

    Returns:
        (train indices, validation indices), each sorted ascending.

    Raises:
        UsageError: ``validation`` outside (0, 1), fewer than 2 classes, or too few rows to hold
            out at least one per class.
    """
    from sklearn.model_selection import train_test_split

    if not 0.0 < validation < 1.0:
        raise UsageError(f"--validation {validation} must be a fraction between 0 and 1 (exclusive), e.g. 0.2")
    classes, counts = np.unique(np.asarray(labels), return_counts=True)
    if len(classes) < 2:
        raise UsageError(f"training needs at least 2 classes; found only {list(classes)}")
    stratify = labels if counts.min() >= 2 else None
    idx = np.arange(len(labels))
    try:
        tr, va = train_test_split(idx, test_size=validation, random_state=seed, stratify=stratify)
    except ValueError as e:
        raise UsageError(f"cannot split {len(labels)} rows in {len(classes)} classes with --validation "
                         f"{validation}: {e}") from None
    return np.sort(tr), np.sort(va)
