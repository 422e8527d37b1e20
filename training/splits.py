"""Making fixed train / validation / test splits (70 / 15 / 15), stratified by label and language.

Reworded variants of one statement must not straddle splits, or the test score measures
memory: statements linked by character 5-gram Jaccard >= `group_threshold` form one group, and
groups (not statements) are assigned. Assignment is deterministic for a given seed.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from .data_check import near_duplicates

SHARES = {"train": 0.70, "validation": 0.15, "test": 0.15}
SPLITS = tuple(SHARES)


def group_variants(texts: list[str], threshold: float) -> list[list[int]]:
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_duplicates(texts, threshold):
        parent[find(i)] = find(j)
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        groups[find(i)].append(i)
    return sorted(groups.values())


def assign_splits(records: list[dict], seed: int = 13, group_threshold: float = 0.5) -> list[str]:
    """A split name for each record."""
    groups = group_variants([r["text"] for r in records], group_threshold)
    strata: dict[tuple, list[list[int]]] = defaultdict(list)
    for group in groups:
        first = records[group[0]]
        strata[(first["label"], first.get("lang", ""))].append(group)
    rng = random.Random(seed)
    out = [""] * len(records)
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        total = sum(len(g) for g in members)
        filled = dict.fromkeys(SPLITS, 0)
        for group in members:
            # Give the group to the split furthest below its target share of this stratum.
            split = max(SPLITS, key=lambda s: SHARES[s] * total - filled[s])
            filled[split] += len(group)
            for i in group:
                out[i] = split
    return out


def write_splits(records: list[dict], out_dir: Path, seed: int = 13) -> dict[str, int]:
    splits = assign_splits(records, seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in SPLITS:
        rows = [r for r, s in zip(records, splits) if s == split]
        rows.sort(key=lambda r: r["id"])
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "split"}, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    return counts
