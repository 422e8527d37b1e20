"""The stance label set, used once: when a new model is created.

After that a model's own `config.id2label` is the only source of label order; code that reads
predictions asks the model (or the `Predictor.labels` tuple), never this module.
"""

# The three labels of ../shared/labeling.md, in the order a freshly created classifier uses.
LABELS: tuple[str, ...] = ("support", "oppose", "neutral")

# The two stance-bearing labels (SemEval-2016's F_avg is the mean F1 of these two).
STANCE_LABELS: tuple[str, ...] = ("support", "oppose")


def label_maps(labels: tuple[str, ...] = LABELS) -> tuple[dict[int, str], dict[str, int]]:
    """Return (id2label, label2id) for a new model."""
    id2label = dict(enumerate(labels))
    return id2label, {label: i for i, label in id2label.items()}
