"""Split assignment: proportions, stratification, determinism, variants kept together."""

import random
from collections import Counter

from training.splits import assign_splits


def rows():
    """200 unrelated random strings (no two are variants of each other)."""
    rng = random.Random(0)
    out = []
    for i in range(200):
        text = " ".join("".join(rng.choice("абвгдеєжзийклмнопрстуфхцшқңөүұ") for _ in range(6)) for _ in range(6))
        out.append({"id": f"r{i}", "text": text, "label": ("support", "oppose", "neutral")[i % 3],
                    "lang": "ru" if i % 5 == 0 else "kk"})
    return out


def test_proportions_are_close_to_70_15_15():
    counts = Counter(assign_splits(rows()))
    assert abs(counts["train"] - 140) <= 6 and abs(counts["validation"] - 30) <= 6 and abs(counts["test"] - 30) <= 6


def test_assignment_is_deterministic():
    assert assign_splits(rows(), seed=3) == assign_splits(rows(), seed=3)


def test_reworded_variants_share_a_split():
    data = rows()
    base = "Депутат Үкіметтен TikTok желісін кәмелетке толмағандар үшін шектеуді талап етті"
    for k in range(6):
        data.append({"id": f"v{k}", "text": base + "!" * (k + 1), "label": "support", "lang": "kk"})
    splits = assign_splits(data)
    assert len({s for r, s in zip(data, splits) if r["id"].startswith("v")}) == 1
