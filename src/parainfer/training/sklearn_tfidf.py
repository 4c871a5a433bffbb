"""The ``sklearn`` backend: TF-IDF of word 1-2-grams and character 2-5-grams (within word
boundaries) + a linear classifier, one scikit-learn Pipeline saved with skops (no pickle).

Recipe: ``FeatureUnion(word TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
char_wb TfidfVectorizer(ngram_range=(2, 5), sublinear_tf=True, min_df=2))`` (each capped at
``max_features`` terms, the most frequent) then the classifier of ``SOLVERS``:

- ``svc`` (default): ``CalibratedClassifierCV(LinearSVC(C), cv=3, method="sigmoid")``: a linear
  SVM (liblinear, one-vs-rest), its scores turned into probabilities by Platt scaling fitted on
  3 folds (3 SVMs, fitted in parallel; ``predict_proba`` averages them).
- ``sgd``: ``SGDClassifier(loss="log_loss", alpha=1 / (C * n_train))``: logistic regression by
  stochastic gradient descent, one-vs-rest in parallel.
- ``lbfgs``: ``LogisticRegression(C, max_iter=1000)``: the multinomial logistic regression this
  backend used first; exact but slow with many classes and features (minutes on 16,000 texts of
  45 classes, where ``svc`` takes seconds; see bench/bench_train.py).

A training split with a class of one row cannot be calibrated (``svc`` needs 2 rows of every
class; it uses ``min(3, rows of the smallest class)`` folds): ``lbfgs`` is used instead, and the
manifest's ``training.solver`` says so. Both vectorizers lowercase. Below ``MIN_DF_2_TEXTS`` training texts min_df is 1: in a small
corpus nearly every term is in one text, and dropping those would leave nothing.

The pipeline is fitted on the labels' text (``str(label)``; one type per column keeps it
one-to-one), so scikit-learn sees class names whatever their JSON type; ``Fitted.labels`` gives
them back with their type.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.training.base import Fitted
from parainfer.models.manifest import versions

MODEL_FILE = "model.skops"
MIN_DF_2_TEXTS = 100  # from this many training texts, a term must be in 2 of them to be a feature
SOLVERS = ("svc", "sgd", "lbfgs")
DEFAULT_C = {"svc": 0.5, "sgd": 4.0, "lbfgs": 4.0}
CLASS_WEIGHTS = ("none", "balanced")
CALIBRATION_FOLDS = 3
PARALLEL_TEXTS = 5_000  # from this many training texts the two vectorizers run in 2 processes (else 1)


def default_jobs() -> int:
    """Processes for the parallel steps: the cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def build_classifier(solver: str = "svc", C: float | None = None, class_weight: str | None = None, seed: int = 0,
                     n_jobs: int = 1, n_train: int = 1000, folds: int = CALIBRATION_FOLDS) -> Any:
    """The unfitted classifier of ``solver`` (see the module docstring); ``C`` None: DEFAULT_C;
    ``folds``: svc's calibration folds (2 or more).

    Raises:
        UsageError: unknown solver, C <= 0, or a class weight other than None/"none"/"balanced".
    """
    from sklearn.calibration import CalibratedClassifierCV
    from sklearn.linear_model import LogisticRegression, SGDClassifier
    from sklearn.svm import LinearSVC

    if solver not in SOLVERS:
        raise UsageError(f"unknown --solver {solver!r}; accepted: {', '.join(SOLVERS)}")
    C = DEFAULT_C[solver] if C is None else C
    if not C > 0:
        raise UsageError(f"--C {C} must be > 0 (inverse regularisation strength, e.g. 0.5 or 4)")
    if class_weight not in (None, *CLASS_WEIGHTS):
        raise UsageError(f"--class-weight {class_weight!r}: accepted: {', '.join(CLASS_WEIGHTS)}")
    weight = None if class_weight in (None, "none") else class_weight
    if solver == "svc":
        return CalibratedClassifierCV(LinearSVC(C=C, class_weight=weight, random_state=seed),
                                      cv=folds, method="sigmoid", n_jobs=min(n_jobs, folds))
    if solver == "sgd":
        return SGDClassifier(loss="log_loss", alpha=1.0 / (C * max(n_train, 1)), class_weight=weight, max_iter=50,
                             tol=1e-4, n_jobs=n_jobs, random_state=seed)
    return LogisticRegression(C=C, max_iter=1000, class_weight=weight, random_state=seed)


def build_pipeline(C: float | None = None, max_features: int | None = 200_000, seed: int = 0, min_df: int = 2,
                   solver: str = "svc", class_weight: str | None = None, n_jobs: int = 1,
                   n_train: int = 1000, folds: int = CALIBRATION_FOLDS) -> Any:
    """The unfitted Pipeline: features (terms in at least ``min_df`` texts, at most
    ``max_features`` word and as many character n-grams) -> the classifier of ``solver``.

    Raises:
        UsageError: ``max_features`` below 1, or a bad classifier option (``build_classifier``).
    """
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.pipeline import FeatureUnion, Pipeline

    if max_features is not None and max_features < 1:
        raise UsageError(f"--max-features {max_features} must be >= 1 (terms kept per vectorizer)")
    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=min_df,
                                 max_features=max_features)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df,
                                 max_features=max_features)),
    ], n_jobs=min(n_jobs, 2) if n_train >= PARALLEL_TEXTS else 1)
    clf = build_classifier(solver, C, class_weight, seed, n_jobs, n_train, folds)
    return Pipeline([("features", features), ("clf", clf)])


def fit(train_texts: list[str], train_labels: list[Any], val_texts: list[str], val_labels: list[Any],
        model_dir: Path, seed: int = 0, C: float | None = None, max_features: int | None = 200_000,
        solver: str = "svc", class_weight: str | None = None, n_jobs: int = 0,
        progress: Callable[[str], None] | None = None) -> Fitted:
    """Fit the pipeline on the training texts, save MODEL_DIR/model.skops, predict validation.

    Args:
        C: inverse regularisation strength (None: ``DEFAULT_C[solver]``).
        max_features: terms kept by each of the two vectorizers (the most frequent); None: all.
        solver: one of ``SOLVERS``.
        class_weight: None or "none" (every row weighs 1) or "balanced" (rows weighted by
            n_rows / (n_classes * rows of their class)).
        n_jobs: processes for the vectorizers and the classifier; 0: every core (``default_jobs``).
        progress: called with one line per stage (vectorizing, fitting, saving), or None.

    Raises:
        UsageError: the training texts hold no word of two or more letters or digits (the word
            features' tokens), so the word vocabulary would be empty; a bad option.
    """
    import skops.io as sio

    say = progress or (lambda line: None)
    n_jobs = n_jobs or default_jobs()
    value = {str(v): v for v in train_labels}
    min_df = 2 if len(train_texts) >= MIN_DF_2_TEXTS else 1
    folds = min(CALIBRATION_FOLDS, min(Counter(map(str, train_labels)).values()))
    if solver == "svc" and folds < 2:  # calibration needs 2 rows of every class; so little data fits at once
        say("a class has 1 training row, too few to calibrate svc's probabilities: solver lbfgs instead")
        solver = "lbfgs"
    C = DEFAULT_C.get(solver) if C is None else C
    pipe = build_pipeline(C, max_features, seed, min_df, solver, class_weight, n_jobs, len(train_texts), folds)
    y = [str(v) for v in train_labels]
    t = time.perf_counter()
    say(f"vectorizing {len(train_texts):,} texts (TF-IDF word 1-2-grams + char 2-5-grams)")
    try:
        x = pipe.named_steps["features"].fit_transform(train_texts)
    except ValueError as e:
        if "empty vocabulary" not in str(e):
            raise
        raise UsageError(f"the {len(train_texts):,} training texts hold no word of 2 or more letters or digits, "
                         "which the sklearn backend's word features need; add such texts or use --backend keras") \
            from None
    sizes = {name: len(v.vocabulary_) for name, v in pipe.named_steps["features"].transformer_list}
    say(f"vectorized in {time.perf_counter() - t:.1f} s: {sizes['word']:,} word + {sizes['char']:,} char features")
    t = time.perf_counter()
    say(f"fitting {solver} (C={C:g}, class_weight={class_weight or 'none'}) on {x.shape[0]:,} x {x.shape[1]:,}, "
        f"{len(value):,} classes")
    pipe.named_steps["clf"].fit(x, y)
    say(f"fitted in {time.perf_counter() - t:.1f} s")
    t = time.perf_counter()
    for _, vectorizer in pipe.named_steps["features"].transformer_list:
        vectorizer.stop_words_ = None  # the pruned terms: only for introspection, and the bulk of the file
        # min_df/max_features pruning leaves numpy int64 indices, which skops saves one array each
        # (minutes for 100,000 terms); Python ints are saved as one JSON value each
        vectorizer.vocabulary_ = {term: int(i) for term, i in vectorizer.vocabulary_.items()}
    sio.dump(pipe, Path(model_dir) / MODEL_FILE)
    say(f"saved {Path(model_dir) / MODEL_FILE} in {time.perf_counter() - t:.1f} s; predicting {len(val_texts):,} validation texts")
    return Fitted(labels=[value[c] for c in pipe.classes_.tolist()],
                  val_pred=[value[p] for p in pipe.predict(val_texts).tolist()],
                  files={"model": MODEL_FILE},
                  preprocessing={"type": "sklearn-pipeline", "steps": "TF-IDF word 1-2 + char_wb 2-5 (lowercase)"},
                  extra={"solver": solver, "C": C, "class_weight": class_weight or "none",
                         "max_features": max_features, "min_df": min_df, "features": sizes})


def package_versions() -> dict[str, str]:
    return versions("scikit-learn", "skops")
