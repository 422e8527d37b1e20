"""Word-level explanations of a prediction, by occlusion.

`explain(predictor, texts)` says, for each word of each (cleaned) text, how much the predicted
label leans on it: the text is scored again with that word cut out, and

    attribution(word) = p(label | text) - p(label | text without the word)

where `label` is the text's prediction. Positive: the word supports the prediction (removing it
lowers the label's probability); negative: it speaks against it; near zero: the model ignores it.

Why occlusion, not gradients or attention:
- model-agnostic: it only calls `Predictor.predict_proba`, so it explains exactly what is served,
  on every backend (torch fp32, bf16, the int8 ONNX model, the TF-IDF baseline), with the
  calibration included; no gradients, no access to the network's insides;
- words, not subword pieces: a reader sees "бұғаттау", not "▁бұғ" + "тау"; Kazakh agglutinated
  forms and hyphenated words ("TikTok-ты", "ата-аналар") stay one word.

Cost: one extra model input per word, so a 20-word statement costs 21 inputs instead of 1. The
original and every variant of every text go to the model in ONE predictor call, so they share
length-sorted batches. A text with more than `max_occlusions` words is occluded in that many
contiguous groups of words instead (each word of a group gets the group's attribution), which
caps the work at `max_occlusions + 1` inputs per text.

Limits: removing a word also changes its neighbours' context (the variant may be ungrammatical,
or read as another statement), so an attribution measures "what happens without this word", not
a share of the decision; attributions are not additive (they need not sum to p(label), and two
words that each repeat the other's cue can both score near zero); grouped words share one number.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .predictor import Predictor
from .text import clean

# A word: letters/digits (any script: Kazakh, Russian, Latin), hyphen or apostrophe inside it
# ("TikTok-ты", "ата-аналар", "don't"). Punctuation belongs to no word and is never removed.
WORD = re.compile(r"\w+(?:[-'’]\w+)*")


MAX_OCCLUSIONS = 48  # variants per text at most: bounds an explanation's cost for any length


@dataclass(frozen=True)
class Explanation:
    label: str                # the prediction explained
    scores: dict[str, float]  # its probabilities, as `Predictor.predict` gives them
    words: list[dict]         # {word, start, end, attribution} in text order; start/end index `text`
    text: str                 # the cleaned text the spans index (the input itself when already clean)
    method: str = "occlusion"
    occlusions: int = 0       # variants scored: the number of words, or of groups for a long text


def words(text: str) -> list[tuple[str, int, int]]:
    """The words of `text` with their character spans."""
    return [(m.group(), m.start(), m.end()) for m in WORD.finditer(text)]


def groups(n: int, max_occlusions: int) -> list[range]:
    """Word indices cut into at most `max_occlusions` contiguous groups of near-equal size
    (one word per group when the text is short enough)."""
    k = min(n, max(1, max_occlusions))
    bounds = [i * n // k for i in range(k + 1)] if n else []
    return [range(a, b) for a, b in zip(bounds, bounds[1:])]


def without(text: str, spans: Sequence[tuple[int, int]]) -> str:
    """`text` with the spans cut out; the rest keeps its original spacing (the predictor's
    cleaning collapses the double space a cut leaves)."""
    out, last = [], 0
    for start, end in sorted(spans):
        out.append(text[last:start])
        last = end
    out.append(text[last:])
    return "".join(out)


def explain(predictor: Predictor, texts: Sequence[str], max_occlusions: int = MAX_OCCLUSIONS) -> list[Explanation]:
    """One `Explanation` per text, in input order; see the module docstring."""
    cleaned = [clean(t) for t in texts]
    split = [words(t) for t in cleaned]
    plans = [groups(len(w), max_occlusions) for w in split]
    # Originals first, so an empty input text is reported with its own index (EmptyText).
    inputs = list(texts)
    for text, ws, plan in zip(cleaned, split, plans):
        inputs.extend(without(text, [ws[j][1:] for j in group]) for group in plan)
    # A text that is one word (or a group covering all of it) leaves nothing to score: it gets
    # the uninformed prior (uniform), i.e. the word carries all of the prediction's confidence.
    scorable = [k for k, t in enumerate(inputs) if k < len(texts) or clean(t)]
    # `predict_with_proba` is `predict` and `predict_proba` in one pass: the label explained is the label
    # `predict` gives (for a text over the window: the document rule over its windows), and the
    # probabilities compared are `predict_proba`'s.
    predictions, probs = predictor.predict_with_proba([inputs[k] for k in scorable])
    rows = np.full((len(inputs), len(predictor.labels)), 1.0 / len(predictor.labels))
    rows[scorable] = probs

    out, k = [], len(texts)
    for i, (text, ws, plan) in enumerate(zip(cleaned, split, plans)):
        prediction = predictions[i]
        column = predictor.labels.index(prediction.label)
        full = rows[i, column]
        attributions = [0.0] * len(ws)
        for group in plan:
            for j in group:
                attributions[j] = round(float(full - rows[k, column]), 6)
            k += 1
        out.append(Explanation(
            label=prediction.label, scores=prediction.scores, text=text, occlusions=len(plan),
            words=[{"word": w, "start": a, "end": b, "attribution": attr} for (w, a, b), attr in zip(ws, attributions)]))
    return out


def top_words(explanation: Explanation, k: int) -> list[int]:
    """Indices of the `k` words with the highest attribution (most supporting first; ties in text order)."""
    order = sorted(range(len(explanation.words)), key=lambda j: -explanation.words[j]["attribution"])
    return order[:k]


def render(explanation: Explanation, quiet: float = 0.005, indent: str = ""):
    """The text as rich `Text`: each word followed by its attribution, green when it supports the
    prediction, red when it speaks against it, uncoloured below `quiet` (noise)."""
    from rich.text import Text

    out, last = Text(indent), 0
    for w in explanation.words:
        out.append(explanation.text[last:w["start"]])
        a = w["attribution"]
        style = "green" if a >= quiet else "red" if a <= -quiet else ""
        out.append(w["word"], style=f"bold {style}" if style else "")
        out.append(f"({a:+.2f})", style=style or "dim")
        last = w["end"]
    out.append(explanation.text[last:])
    return out
