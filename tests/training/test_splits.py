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


def test_grouping_by_outlet_keeps_each_newsroom_in_one_split():
    data = rows()
    outlets = ["zakon.kz", "kaz.zakon.kz", "tengrinews.kz", "kaz.tengrinews.kz", "nur.kz", "baq.kz", "inform.kz",
               "egemen.kz", "abai.kz", "24.kz", "vlast.kz", "orda.kz"]
    for i, r in enumerate(data):
        r["outlet"] = outlets[i % len(outlets)]
    splits = assign_splits(data, group_by="outlet", shares={"train": 0.6, "validation": 0.15, "test": 0.25})
    by_family = {}
    for r, s in zip(data, splits):
        by_family.setdefault(r["outlet"].removeprefix("kaz."), set()).add(s)
    assert all(len(s) == 1 for s in by_family.values()), by_family  # zakon.kz and kaz.zakon.kz together
    counts = Counter(splits)
    assert set(counts) == {"train", "validation", "test"}
    assert counts["train"] > counts["test"] > 0
