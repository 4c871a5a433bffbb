"""The ``sklearn`` backend: TF-IDF of word 1-2-grams and character 2-5-grams (within word
boundaries) + logistic regression, one scikit-learn Pipeline saved with skops (no pickle).

Recipe: ``FeatureUnion(word TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=2),
char_wb TfidfVectorizer(ngram_range=(2, 5), sublinear_tf=True, min_df=2))`` then
``LogisticRegression(C=C, max_iter=1000)`` (lbfgs; softmax over classes when there are more
than two). Both vectorizers lowercase.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from parainfer.training.base import Fitted
from parainfer.models.manifest import versions

MODEL_FILE = "model.skops"


def build_pipeline(C: float = 4.0, max_features: int | None = 200_000, seed: int = 0) -> Any:
    """The unfitted Pipeline: features -> LogisticRegression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import FeatureUnion, Pipeline

    features = FeatureUnion([
        ("word", TfidfVectorizer(analyzer="word", ngram_range=(1, 2), sublinear_tf=True, min_df=2,
                                 max_features=max_features)),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2,
                                 max_features=max_features)),
    ])
    return Pipeline([("features", features), ("clf", LogisticRegression(C=C, max_iter=1000, random_state=seed))])


def fit(train_texts: list[str], train_labels: list[str], val_texts: list[str], val_labels: list[str],
        model_dir: Path, seed: int = 0, C: float = 4.0, max_features: int | None = 200_000) -> Fitted:
    """Fit the pipeline on the training texts, save MODEL_DIR/model.skops, predict validation."""
    import skops.io as sio

    pipe = build_pipeline(C, max_features, seed).fit(train_texts, train_labels)
    for _, vectorizer in pipe.named_steps["features"].transformer_list:
        vectorizer.stop_words_ = None  # the pruned terms: only for introspection, and the bulk of the file
    sio.dump(pipe, Path(model_dir) / MODEL_FILE)
    return Fitted(labels=[str(c) for c in pipe.classes_], val_pred=[str(p) for p in pipe.predict(val_texts)],
                  files={"model": MODEL_FILE},
                  preprocessing={"type": "sklearn-pipeline", "steps": "TF-IDF word 1-2 + char_wb 2-5 (lowercase)"},
                  extra={"C": C, "max_features": max_features})


def package_versions() -> dict[str, str]:
    return versions("scikit-learn", "skops")
