"""The ``sklearn`` backend: TF-IDF of word 1-2-grams and character 2-5-grams (within word
boundaries) + logistic regression, one scikit-learn Pipeline saved with skops (no pickle).

Recipe: ``FeatureUnion(word TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
char_wb TfidfVectorizer(ngram_range=(2, 5), sublinear_tf=True, min_df=2))`` then
``LogisticRegression(C=C, max_iter=1000)`` (lbfgs; softmax over classes when there are more
than two). Both vectorizers lowercase. Below ``MIN_DF_2_TEXTS`` training texts min_df is 1: in a
small corpus nearly every term is in one text, and dropping those would leave nothing.

The pipeline is fitted on the labels' text (``str(label)``; one type per column keeps it
one-to-one), so scikit-learn sees class names whatever their JSON type; ``Fitted.labels`` gives
them back with their type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parainfer.errors import UsageError
from parainfer.training.base import Fitted
from parainfer.models.manifest import versions

MODEL_FILE = "model.skops"
MIN_DF_2_TEXTS = 100  # from this many training texts, a term must be in 2 of them to be a feature


def build_pipeline(C: float = 4.0, max_features: int | None = 200_000, seed: int = 0, min_df: int = 2) -> Any:
    """The unfitted Pipeline: features (terms in at least ``min_df`` texts) -> LogisticRegression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=min_df,
                                 max_features=max_features)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=min_df,
                                 max_features=max_features)),
    ])
    return Pipeline([("features", features), ("clf", LogisticRegression(C=C, max_iter=1000, random_state=seed))])


def fit(train_texts: list[str], train_labels: list[Any], val_texts: list[str], val_labels: list[Any],
        model_dir: Path, seed: int = 0, C: float = 4.0, max_features: int | None = 200_000) -> Fitted:
    """Fit the pipeline on the training texts, save MODEL_DIR/model.skops, predict validation.

    Raises:
        UsageError: the training texts hold no word of two or more letters or digits (the word
            features' tokens), so the word vocabulary would be empty.
    """
    import skops.io as sio

    value = {str(v): v for v in train_labels}
    min_df = 2 if len(train_texts) >= MIN_DF_2_TEXTS else 1
    try:
        pipe = build_pipeline(C, max_features, seed, min_df).fit(train_texts, [str(v) for v in train_labels])
    except ValueError as e:
        if "empty vocabulary" not in str(e):
            raise
        raise UsageError(f"the {len(train_texts):,} training texts hold no word of 2 or more letters or digits, "
                         "which the sklearn backend's word features need; add such texts or use --backend keras") \
            from None
    for _, vectorizer in pipe.named_steps["features"].transformer_list:
        vectorizer.stop_words_ = None  # the pruned terms: only for introspection, and the bulk of the file
    sio.dump(pipe, Path(model_dir) / MODEL_FILE)
    return Fitted(labels=[value[c] for c in pipe.classes_.tolist()],
                  val_pred=[value[p] for p in pipe.predict(val_texts).tolist()],
                  files={"model": MODEL_FILE},
                  preprocessing={"type": "sklearn-pipeline", "steps": "TF-IDF word 1-2 + char_wb 2-5 (lowercase)"},
                  extra={"C": C, "max_features": max_features, "min_df": min_df})


def package_versions() -> dict[str, str]:
    return versions("scikit-learn", "skops")
