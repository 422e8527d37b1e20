"""Document-level stance: split an article or post into sentences, then aggregate.

The aggregation rule (the HTTP service and the batch scorer share it, and the README states it):
1. Each sentence is predicted on its own. A sentence is *evidence* when its predicted label is
   `support` or `oppose`.
2. No evidence: the document is `neutral`.
3. Otherwise each stance's weight is the sum of its evidence sentences' probabilities for it.
   When one weight exceeds the other by at least `BALANCE_MARGIN` of their total, that stance wins;
   a closer call is a balanced weighing of both sides, which the label policy calls `neutral`.
4. The evidence returned is the winning stance's sentences, most confident first (all evidence
   sentences when the document is balanced).
Document `scores` are the mean of the sentence probabilities.

The platform a document is about (models with a platform head; `aggregate_platform`): the
sentences that name one (their platform is not `general`) vote with their probability for it.
The document is about the leading platform when it holds at least `PLATFORM_MAJORITY` of those
votes, else it is `general` (no single platform is meant: none is named, or several are). Its
`platform_scores` are the mean of the sentences' platform probabilities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .predictor import Prediction, Predictor
from .text import split_sentences

BALANCE_MARGIN = 0.2
MAX_EVIDENCE = 5
GENERAL = "general"
PLATFORM_MAJORITY = 2 / 3


@dataclass(frozen=True)
class DocumentPrediction:
    label: str
    scores: dict[str, float]
    sentences: list[tuple[str, Prediction]]
    evidence: list[int]  # indices into `sentences`


def aggregate(sentence_predictions: list[Prediction], labels: tuple[str, ...]) -> tuple[str, dict[str, float], list[int]]:
    """Apply the rule above to per-sentence predictions; returns (label, scores, evidence indices)."""
    if not sentence_predictions:
        raise ValueError("a document needs at least one sentence")
    mean = {lab: round(float(np.mean([p.scores[lab] for p in sentence_predictions])), 6) for lab in labels}
    weight = {"support": 0.0, "oppose": 0.0}
    for p in sentence_predictions:
        if p.label in weight:
            weight[p.label] += p.scores[p.label]
    total = weight["support"] + weight["oppose"]
    evidence = [i for i, p in enumerate(sentence_predictions) if p.label in weight]
    if total == 0:
        return "neutral", mean, []
    leader = max(weight, key=weight.get)
    if abs(weight["support"] - weight["oppose"]) < BALANCE_MARGIN * total:
        label = "neutral"
    else:
        label = leader
        evidence = [i for i in evidence if sentence_predictions[i].label == leader]
    evidence.sort(key=lambda i: -max(sentence_predictions[i].scores[s] for s in weight))
    return label, mean, evidence[:MAX_EVIDENCE]


def aggregate_platform(predictions: list[Prediction]) -> tuple[str | None, dict[str, float] | None]:
    """The platform rule above: (platform, mean platform scores), or (None, None) without a platform head."""
    named = [p for p in predictions if p.platform_scores is not None]
    if not named:
        return None, None
    names = list(named[0].platform_scores)
    mean = {name: round(float(np.mean([p.platform_scores[name] for p in named])), 6) for name in names}
    votes: dict[str, float] = {}
    for p in named:
        if p.platform != GENERAL:
            votes[p.platform] = votes.get(p.platform, 0.0) + p.platform_scores[p.platform]
    if not votes:
        return (GENERAL if GENERAL in names else max(mean, key=mean.get)), mean
    leader = max(votes, key=votes.get)
    if votes[leader] >= PLATFORM_MAJORITY * sum(votes.values()) or GENERAL not in names:
        return leader, mean
    return GENERAL, mean


def predict_document(predictor: Predictor, text: str) -> DocumentPrediction:
    sentences = split_sentences(text)
    if not sentences:
        raise ValueError("the document has no text")
    predictions = predictor.predict(sentences)
    label, scores, evidence = aggregate(predictions, predictor.labels)
    return DocumentPrediction(label=label, scores=scores, sentences=list(zip(sentences, predictions)), evidence=evidence)
