"""The TF-IDF baseline: character n-grams + logistic regression, saved without pickle.

It is the floor the transformer must clear. Its folder holds `tfidf.json` (vectoriser settings,
vocabulary, labels) and `tfidf.safetensors` (idf, coefficients), which `kazstance.backends`
rebuilds, so the shared predictor, `evaluate` and the scorer work on it unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from kazstance.backends import TFIDF_FILES

from .config import ModelConfig


def fit(texts: list[str], labels: list[str], label_order: tuple[str, ...], config: ModelConfig, seed: int):
    """The fitted (vectoriser, classifier, vectoriser settings); `data check`'s cue report uses it too."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vectorizer_params = dict(analyzer="char_wb", ngram_range=tuple(config.ngram_range), sublinear_tf=True,
                             lowercase=True, min_df=2)
    vectorizer = TfidfVectorizer(**vectorizer_params)
    features = vectorizer.fit_transform(texts)
    y = np.array([label_order.index(label) for label in labels])
    clf = LogisticRegression(C=config.C, max_iter=2000, random_state=seed).fit(features, y)
    return vectorizer, clf, vectorizer_params


def fit_and_save(texts: list[str], labels: list[str], label_order: tuple[str, ...], config: ModelConfig,
                 seed: int, out_dir: Path) -> None:
    from safetensors.numpy import save_file

    vectorizer, clf, vectorizer_params = fit(texts, labels, label_order, config, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "vectorizer": {k: v for k, v in vectorizer_params.items() if k != "min_df"},
        "vocabulary": {term: int(i) for term, i in vectorizer.vocabulary_.items()},
        "id2label": {str(i): label for i, label in enumerate(label_order)},
    }
    (out_dir / TFIDF_FILES[0]).write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    # safetensors writes raw buffers: scikit-learn's coef_ is Fortran-ordered, so make every
    # array C-contiguous first or the saved matrix comes back scrambled.
    arrays = {"idf": vectorizer.idf_, "coef": clf.coef_, "intercept": clf.intercept_}
    save_file({k: np.ascontiguousarray(v, dtype=np.float64) for k, v in arrays.items()}, str(out_dir / TFIDF_FILES[1]))
