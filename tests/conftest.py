"""Shared fixtures: a tiny classifier folder, built in seconds, and a private BentoML home."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# A private BentoML home for the whole run, set before anything imports bentoml; removed at exit.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="kazstance-test-bentoml-")
atexit.register(shutil.rmtree, os.environ["BENTOML_HOME"], ignore_errors=True)

REPO = Path(__file__).resolve().parents[1]

SAMPLE_TEXTS = [
    "TikTok-ты бұғаттау керек, балаларға зияны көп.",
    "Бұғаттау ешкімді қорғамайды, бәрі VPN арқылы кіреді.",
    "Министр бұл мәселенің әлі талқыланатынын айтты.",
    "Запрет TikTok ничего не решит, молодежь уйдет в VPN.",
    "Депутат Үкіметтен әлеуметтік желілерге шектеу енгізуді сұрады.",
    "Вопрос о блокировке будет рассмотрен на заседании.",
    "Tiktokty jabu kerek emes, balalar onda bilim alady.",
    "Мектепте телефонға тыйым салу дұрыс шешім.",
]


TINY_PLATFORMS = ("general", "telegram", "tiktok")


def make_untrained_classifier(out_dir: Path, platforms: tuple[str, ...] = TINY_PLATFORMS) -> Path:
    """A tiny random-weight classifier folder in the exact layout training writes, with a platform
    head (`platforms`; none when empty), as the default config trains."""
    from transformers import AutoModelForSequenceClassification

    from kazstance.labels import label_maps
    from kazstance.modeling import META_FILE
    from training.tiny import build_tiny_base

    base = build_tiny_base(SAMPLE_TEXTS * 4, out_dir / "base")
    id2label, label2id = label_maps(platforms=platforms)
    model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=len(id2label), id2label=id2label,
                                                               label2id=label2id)
    model.save_pretrained(out_dir / "model", safe_serialization=True)
    from transformers import AutoTokenizer

    AutoTokenizer.from_pretrained(base).save_pretrained(out_dir / "model")
    meta = {"temperature": 1.0, "max_length": 64, "base_model": "tiny-random", "data_fingerprint": "test",
            "metrics": {}}
    (out_dir / "model" / META_FILE).write_text(json.dumps(meta), encoding="utf-8")
    return out_dir / "model"


def widened_copy(model_dir: Path, folder: Path) -> Path:
    """A copy of `model_dir` with its matrices redrawn wider: at the usual 0.02 init every text gets
    the same probabilities, and a parity check would compare copies of one row."""
    import torch

    from kazstance.modeling import load_transformer

    shutil.copytree(model_dir, folder)
    model, _ = load_transformer(folder)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if weight.dim() == 2 and "embeddings" not in name:
                weight.normal_(0.0, 0.25)
    model.save_pretrained(folder, safe_serialization=True)
    return folder


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    return make_untrained_classifier(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="session")
def bentoml_home() -> Path:
    """The session's private BentoML home (see the top of this file)."""
    return Path(os.environ["BENTOML_HOME"])


@pytest.fixture(scope="session")
def tiny_server(tiny_model_dir, bentoml_home):
    """One real service on the tiny model, shared by the HTTP test modules (a start costs ~15 s)."""
    from bento_server import MAX_REQUEST_BYTES, running_service  # tests/serving/, on the path for its tests

    with running_service(tiny_model_dir, bentoml_home, "tiny",
                         KAZSTANCE_MAX_REQUEST_BYTES=str(MAX_REQUEST_BYTES)) as running:
        yield running
