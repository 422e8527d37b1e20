"""Making fixed train / validation / test splits (70 / 15 / 15 by default).

Reworded variants of one statement must not straddle splits, or the test score measures
memory: statements linked by character 5-gram Jaccard >= `group_threshold` form one group, and
groups (not statements) are assigned. Assignment is deterministic for a given seed.

Hand-written statements are stratified by label and language. News statements are grouped by
outlet family (`group_by="outlet"`): every article of a newsroom lands in one split, so the test
split measures newsrooms the model never read, which is what a new user's archive looks like.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path

from .data_check import near_duplicates
from .sources import outlet_family

SHARES = {"train": 0.70, "validation": 0.15, "test": 0.15}
SPLITS = tuple(SHARES)


def group_variants(texts: list[str], threshold: float, keys: list[str] | None = None) -> list[list[int]]:
    """Groups of statements linked by near-duplication or, when `keys` is given, by an equal key."""
    parent = list(range(len(texts)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, _ in near_duplicates(texts, threshold):
        parent[find(i)] = find(j)
    first_with: dict[str, int] = {}
    for i, key in enumerate(keys or []):
        parent[find(i)] = find(first_with.setdefault(key, i))
    groups: dict[int, list[int]] = defaultdict(list)
    for i in range(len(texts)):
        groups[find(i)].append(i)
    return sorted(groups.values())


def assign_splits(records: list[dict], seed: int = 13, group_threshold: float = 0.5, group_by: str | None = None,
                  shares: dict[str, float] = SHARES) -> list[str]:
    """A split name for each record."""
    keys = None
    if group_by == "outlet":
        keys = [outlet_family(r.get("outlet") or r.get("source_url") or r["id"]) for r in records]
    elif group_by:
        keys = [str(r.get(group_by) or r["id"]) for r in records]
    groups = group_variants([r["text"] for r in records], group_threshold, keys)
    strata: dict[tuple, list[list[int]]] = defaultdict(list)
    for group in groups:
        first = records[group[0]]
        # Whole outlets mix labels and languages: they cannot be stratified, only balanced in size.
        strata[() if group_by else (first["label"], first.get("lang", ""))].append(group)
    rng = random.Random(seed)
    out = [""] * len(records)
    for key in sorted(strata):
        members = strata[key]
        rng.shuffle(members)
        if group_by:
            members.sort(key=len, reverse=True)  # large groups first, so the small ones even out the shares
        total = sum(len(g) for g in members)
        filled = dict.fromkeys(shares, 0)
        for group in members:
            # Give the group to the split furthest below its target share of this stratum.
            split = max(shares, key=lambda s: shares[s] * total - filled[s])
            filled[split] += len(group)
            for i in group:
                out[i] = split
    return out


def write_splits(records: list[dict], out_dir: Path, seed: int = 13, group_by: str | None = None,
                 shares: dict[str, float] = SHARES) -> dict[str, int]:
    splits = assign_splits(records, seed, group_by=group_by, shares=shares)
    out_dir.mkdir(parents=True, exist_ok=True)
    counts = {}
    for split in shares:
        rows = [r for r, s in zip(records, splits) if s == split]
        rows.sort(key=lambda r: r["id"])
        with (out_dir / f"{split}.jsonl").open("w", encoding="utf-8") as f:
            for r in rows:
                f.write(json.dumps({k: v for k, v in r.items() if k != "split"}, ensure_ascii=False) + "\n")
        counts[split] = len(rows)
    return counts
