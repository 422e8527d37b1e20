"""The platform head, second stage (`model.platform_head: frozen`): which platform a statement is
about, learnt on the finished stance model without changing it.

The stance model is fine-tuned first (`training/train.py`); then its pooled representation of
every training statement is computed once, with the body frozen, and a multinomial logistic
regression learns the platform from it. The regression's weights become extra rows of the
classification layer (named `platform:<name>`, see `kazstance.labels`), so every backend computes
stance and platform in one pass, and the stance rows keep their weights: every stance
probability stays as it was (up to the float rounding of a wider matrix product, < 1e-6).

The price: the stance-tuned pooled representation keeps little of the platform. On the default
model this head reached 0.52 platform macro-F1 on the news test, against 0.73 for the joint head
(README, "Platform detection"), so the default config trains the head jointly and this stage is
for a model whose stance must not move at all.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from kazstance.labels import label_maps
from kazstance.text import clean

BATCH = 64


def pooled_features(model, tokenizer, texts: Sequence[str], max_length: int) -> np.ndarray:
    """The pooled representation the classification layer reads, one row per text (eval mode: no dropout)."""
    import torch

    rows = []
    with torch.inference_mode():
        for start in range(0, len(texts), BATCH):
            batch = [clean(t) for t in texts[start:start + BATCH]]
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
            rows.append(model.base_model(**enc).pooler_output.float().numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.hidden_size), dtype=np.float32)


def add_platform_head(run_dir: Path, texts: Sequence[str], platforms: Sequence[str], max_length: int,
                      C: float = 1.0, seed: int = 0) -> tuple[str, ...]:
    """Fit the platform head on (`texts`, `platforms`) and save the widened model into `run_dir`.
    Returns the platform names, in output order."""
    import torch
    from sklearn.linear_model import LogisticRegression
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    safe = dict(trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(run_dir, use_safetensors=True, **safe).eval()
    tokenizer = AutoTokenizer.from_pretrained(run_dir, **safe)
    names = tuple(sorted(set(platforms)))
    if len(names) < 2:
        raise ValueError(f"the platform head needs at least two platforms in the training data; found {len(names)}")
    features = pooled_features(model, tokenizer, texts, max_length)
    fit = LogisticRegression(C=C, max_iter=5000, random_state=seed).fit(features, list(platforms))
    assert tuple(fit.classes_) == names  # sklearn orders classes as sorted() does
    weight, bias = fit.coef_, fit.intercept_
    if len(names) == 2:  # a binary fit has one row: P(second) = sigmoid(w.x + b) = softmax([0, w.x + b])
        weight, bias = np.vstack([np.zeros_like(weight), weight]), np.concatenate([[0.0], bias])

    stance = model.classifier
    widened = torch.nn.Linear(stance.in_features, stance.out_features + len(names))
    with torch.no_grad():
        widened.weight.copy_(torch.cat([stance.weight, torch.as_tensor(weight, dtype=stance.weight.dtype)]))
        widened.bias.copy_(torch.cat([stance.bias, torch.as_tensor(bias, dtype=stance.bias.dtype)]))
    labels = tuple(model.config.id2label[i] for i in range(stance.out_features))
    model.classifier = widened
    model.num_labels = model.config.num_labels = widened.out_features
    model.config.id2label, model.config.label2id = label_maps(labels, names)
    model.save_pretrained(run_dir, safe_serialization=True)
    return names
