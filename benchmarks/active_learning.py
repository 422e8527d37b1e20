"""Does choosing what to label pay? An active-learning simulation on the project's own data.

Start: the hand-written train set only. Pool: the news train set (1560 labelled statements whose
labels are hidden until "bought"). Each round buys `--per-round` statements, either chosen by the
product's `training.selection.select` (strategy `default`: entropy with per-outlet and per-month
caps and the near-duplicate rule), run on the pool scored by the current model exactly in
`kazstance score --keep-text --keep-field outlet --keep-field date` output form, or drawn at random;
the model is retrained on hand-written train + everything bought so far and evaluated on the news
test (headline: macro-F1 on the `clarity=clear` items; all items and accuracy are recorded too).
Every seed (init/shuffle of training, the random draws, `select`'s seed) runs both strategies from
the same round-0 model.

The proxy, and why. One full fine-tune with `training/train.py` + `configs/default.yaml` takes
12-17 minutes on this 2-core CPU; the simulation needs 21 (3 seeds x (1 + 3 rounds x 2
strategies)), and the machine is shared. So each retrain here fine-tunes only the top `--top-layers`
(default 1 of 12: measured, 2 layers x 4 epochs took 214 s per retrain on the shared 2 cores, too
slow for 21 retrains in the time available) transformer layers of the same base encoder (the offline multilingual-e5-small built by `kazstance base-model`) plus BERT's
pooler and a fresh classification head, i.e. the architecture of
`AutoModelForSequenceClassification` that the product trains. The frozen lower layers' outputs are
computed once per text and cached in memory; the top layers are the real `BertLayer` modules,
deep-copied from the base for every retrain, so every retrain starts from the same weights. The
rest follows the product's recipe where it can: `clean()` text, max_length 128, batch 16, AdamW
with a separate head/pooler learning rate (the config's 5e-4) and no decay on 1-d parameters,
linear warm-up and decay, the config's sample weights (news x2, borderline x0.5) in a weighted
cross-entropy, and early stopping on validation macro-F1 evaluated twice per epoch (here on the
hand-written validation set; the news test is never used for any choice). Deviations chosen for
time: 2 epochs instead of 4, and a body learning rate of 2e-4 instead of 3e-5 (with one trainable
layer and few steps, 3e-5 underfits: on round 0 with 3 epochs it reached validation macro-F1
0.718 against 0.793 for 1e-4; the choice was made on hand-written validation only). Not reproduced: lower layers never
adapt, no temperature calibration (argmax metrics do not change; `select`'s entropies are on the
uncalibrated softmax), no sliding windows (every text here fits in 128 tokens).

Output: a JSON file with the CPU, the settings, every (seed, strategy, round) result with its
retrain wall time and the label mix of what was bought, and mean/std/min/max across seeds; a plot
of macro-F1 (clear news test) against the number of labelled news statements.

    nice -n 10 .venv/bin/python benchmarks/active_learning.py \
        --out benchmarks/results/active-learning.json --plot benchmarks/results/active-learning.png
"""

from __future__ import annotations

import copy
import json
import math
import platform
import random
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import typer
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run as a script from anywhere: the project's packages come first

from kazstance.backend_choice import cpu  # noqa: E402
from kazstance.labels import LABELS, label_maps  # noqa: E402
from kazstance.text import clean  # noqa: E402
from training.base_model import resolve_base_model  # noqa: E402
from training.evaluate import metrics_for  # noqa: E402
from training.selection import select  # noqa: E402

DATA = {
    "train": ROOT / "data/train.jsonl",
    "validation": ROOT / "data/validation.jsonl",
    "pool": ROOT / "data/news/train.jsonl",
    "test": ROOT / "data/news/test.jsonl",
}
STRATEGIES = ("select", "random")
KEEP_FIELDS = ("outlet", "date")  # what `kazstance score --keep-field` would carry for select's diversity caps


@dataclass
class Settings:
    seeds: int
    rounds: int
    per_round: int
    top_layers: int
    epochs: int
    max_length: int
    batch_size: int
    learning_rate: float
    head_learning_rate: float
    weight_decay: float
    warmup_ratio: float
    patience: int
    threads: int
    select_strategy: str
    sample_weights: dict
    base_model: str


# ------------------------------------------------------------------------------------------ data


def read_jsonl(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def product_recipe(config: Path) -> dict:
    """The product's training settings, so the proxy inherits them instead of restating them."""
    return yaml.safe_load(config.read_text(encoding="utf-8"))


def sample_weight(record: dict, sample_weights: dict) -> float:
    """The product's per-row loss weight (train.py's `weight`): product of the matching field factors."""
    w = 1.0
    for name, by_value in sample_weights.items():
        w *= by_value.get(str(record.get(name)), 1.0)
    return w


# ------------------------------------------------------------------------------------- the cache


def load_base(base_dir: Path, seed: int):
    """The base encoder, with the classifier architecture the product trains."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    id2label, label2id = label_maps(LABELS)
    torch.manual_seed(seed)
    tokenizer = AutoTokenizer.from_pretrained(base_dir, trust_remote_code=False)
    model = AutoModelForSequenceClassification.from_pretrained(
        base_dir, num_labels=len(LABELS), id2label=id2label, label2id=label2id, use_safetensors=True,
        trust_remote_code=False)
    return tokenizer, model.eval()


@torch.no_grad()
def frozen_activations(texts: list[str], tokenizer, model, cut: int, max_length: int,
                       batch_size: int = 64) -> list[torch.Tensor]:
    """Hidden states after the first `cut` layers, one [tokens, hidden] tensor per text (padding
    dropped), computed once: those layers never change, so every retrain reuses them."""
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch: less padding
    out: list[torch.Tensor | None] = [None] * len(texts)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([clean(texts[i]) for i in idx], truncation=True, max_length=max_length, padding=True,
                        return_tensors="pt")
        hidden = model.bert(**enc, output_hidden_states=True).hidden_states[cut]  # [0] is the embedding output
        for row, i in enumerate(idx):
            out[i] = hidden[row, :int(enc["attention_mask"][row].sum())].clone()
    return out


def pad(cache: list[torch.Tensor], idx: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of cached activations and its attention mask."""
    length = max(len(cache[i]) for i in idx)
    hidden = torch.zeros(len(idx), length, cache[idx[0]].shape[1])
    mask = torch.zeros(len(idx), length, dtype=torch.long)
    for row, i in enumerate(idx):
        hidden[row, :len(cache[i])] = cache[i]
        mask[row, :len(cache[i])] = 1
    return hidden, mask


# ------------------------------------------------------------------------------------- the model


class TopClassifier(torch.nn.Module):
    """The top of `BertForSequenceClassification`: the last K `BertLayer`s, the pooler, dropout and
    the classifier, fed with cached activations of the layers below."""

    def __init__(self, base, top_layers: int):
        super().__init__()
        self.config = base.config
        self.layers = torch.nn.ModuleList(copy.deepcopy(base.bert.encoder.layer[-top_layers:]))
        self.pooler = copy.deepcopy(base.bert.pooler)
        self.dropout = torch.nn.Dropout(base.config.classifier_dropout or base.config.hidden_dropout_prob)
        self.classifier = torch.nn.Linear(base.config.hidden_size, len(LABELS))
        # A fresh head, initialised as transformers' BERT init does (normal(0, initializer_range), zero bias).
        self.classifier.weight.data.normal_(0.0, base.config.initializer_range)
        self.classifier.bias.data.zero_()

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        from transformers.masking_utils import create_bidirectional_mask

        # The same mask construction BertModel uses, so padding is ignored whatever attention kernel runs.
        attention = create_bidirectional_mask(config=self.config, inputs_embeds=hidden, attention_mask=mask)
        for layer in self.layers:
            hidden = layer(hidden, attention)
        return self.classifier(self.dropout(self.pooler(hidden)))


def optimizer_for(model: TopClassifier, s: Settings) -> torch.optim.Optimizer:
    """train.py's parameter groups: larger step for head and pooler, no weight decay on 1-d params."""
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        is_head = name.startswith("classifier") or name.startswith("pooler")
        groups.setdefault((is_head, param.ndim >= 2), []).append(param)
    return torch.optim.AdamW([{"params": p, "lr": s.head_learning_rate if head else s.learning_rate,
                               "weight_decay": s.weight_decay if decays else 0.0}
                              for (head, decays), p in groups.items()])


def length_grouped_batches(idx: list[int], cache: list[torch.Tensor], batch_size: int,
                           rng: random.Random) -> list[list[int]]:
    """Shuffled batches of similar length (like the Trainer's group_by_length): random order, little padding."""
    idx = idx[:]
    rng.shuffle(idx)
    mega = batch_size * 16
    batches = []
    for start in range(0, len(idx), mega):
        chunk = sorted(idx[start:start + mega], key=lambda i: len(cache[i]), reverse=True)
        batches += [chunk[k:k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@torch.no_grad()
def predict_proba(model: TopClassifier, cache: list[torch.Tensor], idx: list[int], batch_size: int = 64) -> np.ndarray:
    model.eval()
    order = sorted(range(len(idx)), key=lambda k: len(cache[idx[k]]))
    probs = np.zeros((len(idx), len(LABELS)))
    for start in range(0, len(order), batch_size):
        rows = order[start:start + batch_size]
        hidden, mask = pad(cache, [idx[k] for k in rows])
        probs[rows] = torch.softmax(model(hidden, mask), dim=-1).numpy()
    return probs


def macro_f1(records: list[dict], probs: np.ndarray) -> float:
    return metrics_for(records, probs, LABELS, with_clear=False)["macro_f1"]


def train_one(base, cache, records, train_idx: list[int], val_idx: list[int], s: Settings, seed: int
              ) -> tuple[TopClassifier, dict]:
    """One retrain: fresh copy of the top layers, weighted CE, early stopping on validation macro-F1."""
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model = TopClassifier(base, s.top_layers)
    optimizer = optimizer_for(model, s)
    steps_per_epoch = math.ceil(len(train_idx) / s.batch_size)
    total, warmup = steps_per_epoch * s.epochs, int(s.warmup_ratio * steps_per_epoch * s.epochs)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: step / max(1, warmup) if step < warmup else max(0.0, (total - step) / max(1, total - warmup)))
    label_id = {label: i for i, label in enumerate(LABELS)}
    y = torch.tensor([label_id[records[i]["label"]] for i in range(len(records))])
    w = torch.tensor([sample_weight(records[i], s.sample_weights) for i in range(len(records))], dtype=torch.float)
    val_records = [records[i] for i in val_idx]
    eval_every = max(1, steps_per_epoch // 2)  # twice per epoch, as train.py does
    best = {"val_macro_f1": -1.0, "step": 0}
    best_state, since_best, step = None, 0, 0
    for _ in range(s.epochs):
        for batch in length_grouped_batches(train_idx, cache, s.batch_size, rng):
            model.train()
            hidden, mask = pad(cache, batch)
            losses = torch.nn.functional.cross_entropy(model(hidden, mask), y[batch], reduction="none")
            loss = (losses * w[batch]).sum() / w[batch].sum()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            step += 1
            if step % eval_every == 0 or step == total:
                f1 = macro_f1(val_records, predict_proba(model, cache, val_idx))
                if f1 > best["val_macro_f1"]:
                    best, best_state, since_best = {"val_macro_f1": f1, "step": step}, copy.deepcopy(model.state_dict()), 0
                else:
                    since_best += 1
                if since_best >= s.patience:
                    break
        else:
            continue
        break  # early stop
    model.load_state_dict(best_state)
    return model, {**best, "steps": step, "steps_per_epoch": steps_per_epoch}


# ------------------------------------------------------------------------------------ choosing


def write_scored(path: Path, pool: list[dict], probs: np.ndarray, tokens: list[int]) -> None:
    """The pool as `kazstance score --keep-text --keep-field outlet --keep-field date` would write it
    (serving/score.py's output_schema, statement unit): what `select` reads in production."""
    with path.open("w", encoding="utf-8") as f:
        for k, (r, p) in enumerate(zip(pool, probs)):
            row = {"source": DATA["pool"].name, "record": k, "id": r["id"]}
            row.update({name: r.get(name) for name in KEEP_FIELDS})
            row.update(text=r["text"], label=LABELS[int(p.argmax())])
            row.update({f"score_{label}": float(p[j]) for j, label in enumerate(LABELS)})
            row.update(tokens=tokens[k], windows=1, model="proxy-top-layers", error=None)
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def choose_by_select(pool: list[dict], probs: np.ndarray, tokens: list[int], n: int, seed: int, strategy: str,
                     workdir: Path) -> list[str]:
    """Ids picked by the product's `select`, run on the scored remaining pool."""
    scored = workdir / "scored.jsonl"
    write_scored(scored, pool, probs, tokens)
    return [c.id for c in select([scored], n=n, strategy=strategy, seed=seed).picked]


def choose_at_random(pool: list[dict], n: int, rng: random.Random) -> list[str]:
    return [r["id"] for r in rng.sample(pool, min(n, len(pool)))]


def describe_picked(records: list[dict]) -> dict:
    """What a round bought: label mix, borderline count, outlets (context for reading the curves)."""
    return {"labels": dict(Counter(r["label"] for r in records)),
            "borderline": sum(r.get("clarity") == "borderline" for r in records),
            "outlets": len({r.get("outlet") for r in records})}


# ---------------------------------------------------------------------------------- evaluation


def evaluate(test: list[dict], probs: np.ndarray) -> dict:
    m = metrics_for(test, probs, LABELS)
    return {"macro_f1_clear": m["clear"]["macro_f1"], "macro_f1_all": m["macro_f1"],
            "accuracy_all": m["accuracy"], "accuracy_clear": m["clear"]["accuracy"], "n_test_clear": m["clear"]["n"],
            "n_test_all": m["n"]}


# ---------------------------------------------------------------------------------- simulation


class Data:
    """All texts in one list (so one activation cache), with the index ranges of each split."""

    def __init__(self):
        self.splits = {name: read_jsonl(path) for name, path in DATA.items()}
        self.records, self.index = [], {}
        for name, rows in self.splits.items():
            self.index[name] = list(range(len(self.records), len(self.records) + len(rows)))
            self.records += rows
        self.pool_position = {r["id"]: i for i, r in zip(self.index["pool"], self.splits["pool"])}


def run_seed(seed: int, data: Data, base, cache, s: Settings, log) -> list[dict]:
    """Round 0 plus `rounds` rounds of each strategy for one seed; one result row per retrain."""
    results = []
    test, hand = data.splits["test"], data.index["train"]

    def retrain(picked_ids: list[str], tag: str):
        started = time.time()
        train_idx = hand + [data.pool_position[i] for i in picked_ids]
        model, info = train_one(base, cache, data.records, train_idx, data.index["validation"], s, seed)
        scores = evaluate(test, predict_proba(model, cache, data.index["test"]))
        info["retrain_seconds"] = round(time.time() - started, 1)
        log(f"seed {seed} {tag}: n_news={len(picked_ids)} clear F1 {scores['macro_f1_clear']:.4f} "
            f"all F1 {scores['macro_f1_all']:.4f} val {info['val_macro_f1']:.4f} ({info['retrain_seconds']} s)")
        return model, {**scores, **info}

    model0, row0 = retrain([], "round 0")
    for strategy in STRATEGIES:
        results.append({"seed": seed, "strategy": strategy, "round": 0, "n_news_labelled": 0, **row0,
                        "shared_round0": True})
    for strategy in STRATEGIES:
        rng, model, picked = random.Random(seed), model0, []
        with tempfile.TemporaryDirectory(prefix="kazstance-al-") as tmp:
            for rnd in range(1, s.rounds + 1):
                taken = set(picked)
                remaining = [r for r in data.splits["pool"] if r["id"] not in taken]
                if strategy == "select":
                    idx = [data.pool_position[r["id"]] for r in remaining]
                    probs = predict_proba(model, cache, idx)  # the current model scores what is still unlabelled
                    new = choose_by_select(remaining, probs, [len(cache[i]) for i in idx], s.per_round,
                                           seed, s.select_strategy, Path(tmp))
                else:
                    new = choose_at_random(remaining, s.per_round, rng)
                picked += new
                model, row = retrain(picked, f"{strategy} round {rnd}")
                bought = [data.records[data.pool_position[i]] for i in new]
                results.append({"seed": seed, "strategy": strategy, "round": rnd, "n_news_labelled": len(picked),
                                **row, "picked_this_round": describe_picked(bought)})
    return results


def summarise(results: list[dict]) -> dict:
    """Mean, std (sample, n-1), min and max across seeds per strategy and round."""
    out = {}
    for strategy in STRATEGIES:
        rows = []
        for rnd in sorted({r["round"] for r in results}):
            runs = [r for r in results if r["strategy"] == strategy and r["round"] == rnd]
            row = {"round": rnd, "n_news_labelled": runs[0]["n_news_labelled"], "seeds": len(runs)}
            for key in ("macro_f1_clear", "macro_f1_all", "accuracy_all"):
                values = [r[key] for r in runs]
                row[key] = {"mean": statistics.fmean(values),
                            "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                            "min": min(values), "max": max(values), "values": values}
            rows.append(row)
        out[strategy] = rows
    return out


def retrain_times(results: list[dict]) -> dict:
    """Wall time per retrain; round 0 is one retrain shared by both strategies, so it counts once."""
    seconds = [r["retrain_seconds"] for r in results if r["round"] > 0 or r["strategy"] == STRATEGIES[0]]
    return {"count": len(seconds), "mean": round(statistics.fmean(seconds), 1), "min": min(seconds),
            "max": max(seconds), "total": round(sum(seconds), 1)}


def plot(summary: dict, results: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, colour, shift in zip(STRATEGIES, ("tab:blue", "tab:orange"), (-4, 4)):
        rows = summary[strategy]
        x = [r["n_news_labelled"] + shift for r in rows]  # a small shift keeps the two error bars apart
        mean = [r["macro_f1_clear"]["mean"] for r in rows]
        std = [r["macro_f1_clear"]["std"] for r in rows]
        ax.errorbar(x, mean, yerr=std, marker="o", capsize=4, color=colour,
                    label=f"{'select (default)' if strategy == 'select' else 'random'}: mean ± std")
        ax.fill_between(x, [r["macro_f1_clear"]["min"] for r in rows], [r["macro_f1_clear"]["max"] for r in rows],
                        color=colour, alpha=0.15, label=f"{strategy}: min-max over seeds")
        runs = [r for r in results if r["strategy"] == strategy]
        ax.scatter([r["n_news_labelled"] + shift for r in runs], [r["macro_f1_clear"] for r in runs], s=8, color=colour,
                   alpha=0.5)
    ax.set_xlabel("labelled news statements added to the hand-written train")
    ax.set_ylabel("macro-F1, news test (clear items)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def merge_reports(paths: list[Path], out: Path, plot_path: Path) -> dict:
    """One report from runs of the same settings over different seeds (e.g. seeds run as separate
    processes to use idle cores): a (seed, strategy, round) found in several files is taken from the first."""
    reports = [json.loads(Path(p).read_text(encoding="utf-8")) for p in paths]
    for r in reports[1:]:
        # Seeds differ by design; torch threads change only floating-point summation order.
        if r["settings"] | {"seeds": 0, "threads": 0} != reports[0]["settings"] | {"seeds": 0, "threads": 0}:
            raise typer.BadParameter(f"settings differ between {paths[0]} and another file: not one experiment")
    runs, seen = [], set()
    for r in reports:
        for row in r["runs"]:
            key = (row["seed"], row["strategy"], row["round"])
            if key not in seen:
                seen.add(key)
                runs.append(row)
    seeds = sorted({row["seed"] for row in runs})
    merged = {**reports[0], "seeds": seeds, "complete": all(sum(row["seed"] == seed for row in runs)
                                                             == len(STRATEGIES) * (reports[0]["settings"]["rounds"] + 1)
                                                             for seed in seeds),
              "summary": summarise(runs), "retrain_seconds": retrain_times(runs), "runs": runs,
              "merged_from": [{"file": str(p), "seeds": r["seeds"], "command": r["command"],
                               "threads": r["settings"]["threads"], "wall_seconds": r["wall_seconds"],
                               "cache_seconds": r["cache_seconds"]}
                              for p, r in zip(paths, reports)]}
    merged["settings"]["seeds"] = len(seeds)
    merged.pop("wall_seconds", None)  # the parts' own wall times are in merged_from; they may have overlapped
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2, ensure_ascii=False), encoding="utf-8")
    plot(merged["summary"], runs, plot_path, f"select() vs random, {len(seeds)} seeds, "
         f"{merged['settings']['per_round']}/round; proxy: top-{merged['settings']['top_layers']}-layer fine-tune")
    return merged


def main(out: Path = typer.Option(Path("benchmarks/results/active-learning.json")),
         plot_path: Path = typer.Option(Path("benchmarks/results/active-learning.png"), "--plot"),
         seeds: int = 3, rounds: int = 3, per_round: int = 200,
         top_layers: int = typer.Option(1, help="transformer layers fine-tuned per retrain (the rest frozen, cached)"),
         epochs: int = 2, learning_rate: float = typer.Option(2e-4, help="body lr (configs/default.yaml has 3e-5 for all 12 layers)"),
         head_learning_rate: float = typer.Option(None, help="head/pooler lr (default: configs/default.yaml)"),
         threads: int = 2, first_seed: int = 13, config: Path = ROOT / "configs/default.yaml",
         strategy: str = typer.Option("default", help="select() strategy"),
         merge: list[Path] = typer.Option(None, help="instead of running: combine these result files "
                                                        "(same settings, different seeds) into --out")) -> None:
    if merge:
        merge_reports(merge, out, plot_path)
        return
    started = time.time()
    torch.set_num_threads(threads)
    recipe = product_recipe(config)
    t = recipe["train"]
    s = Settings(seeds=seeds, rounds=rounds, per_round=per_round, top_layers=top_layers, epochs=epochs,
                 max_length=recipe["model"]["max_length"], batch_size=t["batch_size"],
                 learning_rate=learning_rate or t["learning_rate"],
                 head_learning_rate=head_learning_rate or t.get("head_learning_rate") or t["learning_rate"],
                 weight_decay=t.get("weight_decay", 0.0), warmup_ratio=t.get("warmup_ratio", 0.0),
                 patience=t.get("early_stopping_patience", 2), threads=threads, select_strategy=strategy,
                 sample_weights=t.get("sample_weights", {}), base_model=recipe["model"]["base_model"])

    def log(msg: str) -> None:
        print(f"[{time.time() - started:7.1f} s] {msg}", flush=True)

    data = Data()
    base_dir = resolve_base_model(s.base_model)
    tokenizer, base = load_base(base_dir, first_seed)
    cut = base.config.num_hidden_layers - s.top_layers
    cache_started = time.time()
    cache = frozen_activations([r["text"] for r in data.records], tokenizer, base, cut, s.max_length)
    cache_seconds = time.time() - cache_started
    log(f"cached layer-{cut} activations of {len(cache)} texts in {cache_seconds:.0f} s")

    results = []
    seed_list = list(range(first_seed, first_seed + seeds))
    for k, seed in enumerate(seed_list):
        results += run_seed(seed, data, base, cache, s, log)
        # Written after every seed: a run cut short still leaves its finished seeds on disk.
        summary = summarise(results)
        report = {
            "benchmark": "active-learning",
            "command": "nice -n 10 .venv/bin/python benchmarks/active_learning.py " + " ".join(sys.argv[1:]),
            "complete": k == len(seed_list) - 1,
            "cpu": cpu()[0], "machine": platform.machine(), "torch": torch.__version__,
            "settings": asdict(s), "seeds": seed_list[:k + 1],
            "proxy": (f"top {s.top_layers} of {base.config.num_hidden_layers} BertLayers + pooler + fresh head "
                      f"fine-tuned on cached layer-{cut} activations of the base encoder; lower layers and "
                      f"embeddings frozen"),
            "data": {name: {"path": str(path.relative_to(ROOT)), "n": len(data.splits[name])}
                     for name, path in DATA.items()},
            "headline_metric": "macro-F1 on news test items with clarity=clear",
            "cache_seconds": round(cache_seconds, 1),
            "retrain_seconds": retrain_times(results),
            "wall_seconds": round(time.time() - started, 1),
            "summary": summary,
            "runs": results,
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
        plot(summary, results, plot_path, f"select() vs random, {k + 1} seed(s), {per_round}/round; "
                                          f"proxy: top-{s.top_layers}-layer fine-tune")
    log(f"wrote {out} and {plot_path}")
    for strategy in STRATEGIES:
        for row in summary[strategy]:
            m = row["macro_f1_clear"]
            log(f"{strategy:6s} n={row['n_news_labelled']:4d} clear F1 {m['mean']:.4f} ± {m['std']:.4f} "
                f"(min {m['min']:.4f}, max {m['max']:.4f})")


if __name__ == "__main__":
    typer.run(main)
