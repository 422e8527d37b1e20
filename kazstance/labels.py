"""The stance label set, used once: when a new model is created.

After that a model's own `config.id2label` is the only source of label order; code that reads
predictions asks the model (or the `Predictor.labels` tuple), never this module.
"""

# The three labels of ../shared/labeling.md, in the order a freshly created classifier uses.
LABELS: tuple[str, ...] = ("support", "oppose", "neutral")

# The two stance-bearing labels (SemEval-2016's F_avg is the mean F1 of these two).
STANCE_LABELS: tuple[str, ...] = ("support", "oppose")


# A model with a platform head has one output per stance, then one per platform named
# "platform:<name>": one linear layer over the same pooled representation, i.e. two heads side by
# side. Every backend (torch, bf16, the int8 ONNX graph) then computes both in one pass, unchanged;
# the predictor splits the logits and applies a softmax to each group on its own.
PLATFORM_PREFIX = "platform:"


def label_maps(labels: tuple[str, ...] = LABELS, platforms: tuple[str, ...] = ()) -> tuple[dict[int, str], dict[str, int]]:
    """Return (id2label, label2id) for a new model: the stance labels, then the platforms' outputs."""
    id2label = dict(enumerate([*labels, *(PLATFORM_PREFIX + p for p in platforms)]))
    return id2label, {label: i for i, label in id2label.items()}


def split_outputs(names: tuple[str, ...]) -> tuple[list[int], list[int]]:
    """(stance columns, platform columns) of a model's outputs, from its id2label names."""
    platform = [i for i, name in enumerate(names) if name.startswith(PLATFORM_PREFIX)]
    return [i for i in range(len(names)) if i not in platform], platform
