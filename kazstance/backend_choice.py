"""`--backend auto`: the fastest backend whose predictions match fp32's, on this CPU, for this model.

The machines this runs on change (AVX-512 VNNI here, AMX there), and which backend wins changes
with them. So the choice is measured, not assumed: each candidate (fp32 `torch`; `bf16` where
the CPU has bf16 dot products; `int8` where the model has its exported artefact; either only if
`kazstance export` did not find it disagreeing with fp32 on more than 1% of the validation split)
scores a fixed
probe of statements; one whose labels differ from fp32's on any probe statement, or whose
probabilities move more than `MAX_PROB_DIFF`, is out; the fastest of the rest wins. The
decision is cached per CPU model, core count and model content (`~/.cache/kazstance/backends.json`,
or `$KAZSTANCE_CACHE`), so only a new machine or a new model pays the ~10 s it takes.

The probe is a smoke test of the arithmetic on this CPU; the parity that makes a backend
eligible at all is measured on the news test and the challenge set by `benchmarks/backends.py`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

MAX_PROB_DIFF = 0.05
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
# Kazakh and Russian statements of every stance and of different lengths.
PROBE = [
    "TikTok-ты бұғаттау керек, балаларға зияны көп.",
    "Бұғаттау ешкімді қорғамайды, бәрі VPN арқылы кіреді.",
    "Министр бұл мәселенің әлі талқыланатынын айтты.",
    "Запрет TikTok ничего не решит, молодежь уйдет в VPN.",
    "Депутат Үкіметтен әлеуметтік желілерге шектеу енгізуді сұрады.",
    "Вопрос о блокировке будет рассмотрен на заседании правительства в следующем месяце.",
    "16 жасқа толмаған балаларға әлеуметтік желіні жабу дұрыс шешім деп санаймын.",
    "Мета компаниясы Қазақстанда өкілдік ашуға міндетті болуы тиіс.",
    "Эксперты считают, что возрастные ограничения для соцсетей защитят детей от травли.",
    "Блокировка Telegram ударит по малому бизнесу, который продает через каналы.",
    "Сенат заңды қабылдады, ол келесі жылдан бастап күшіне енеді.",
    "Ата-аналар балаларының телефонды қанша уақыт қолданатынын өздері бақылауы керек, мемлекет емес.",
    "Роскомнадзор сообщил о замедлении работы платформы в ряде регионов.",
    "Шектеу сөз бостандығына қайшы келеді деп есептейді құқық қорғаушылар.",
    "Минцифры предлагает обязать платформы открыть представительства в Казахстане.",
    "Ok",
] * 2


def cpu() -> tuple[str, set[str]]:
    """This CPU's model name and its feature flags (from /proc/cpuinfo; empty where there is none)."""
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    model = re.search(r"^model name\s*:\s*(.*)$", cpuinfo, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", cpuinfo, re.M)
    return (model.group(1) if model else ""), (set(flags.group(1).split()) if flags else set())


def cpu_key() -> str:
    """What decides the winner: the CPU model, its bf16/int8 features and the cores used."""
    model, flags = cpu()
    features = [f for f in ("avx512_vnni", "avx512_bf16", "amx_int8", "amx_bf16") if f in flags]
    return f"{model or 'cpu'}|{'+'.join(features)}|{len(os.sched_getaffinity(0))} cores"


def has_bf16() -> bool:
    return bool(cpu()[1] & set(BF16_FLAGS))


def cache_file() -> Path:
    return Path(os.environ.get("KAZSTANCE_CACHE", "~/.cache/kazstance")).expanduser() / "backends.json"


def choose(path: Path, max_length: int, threads: int | None = None) -> dict:
    """{"backend": the winner, "why": ..., "measured": {backend: statements/s or the reason it is out}}."""
    key = _key(path, threads)  # hashes the model (~1 s): once
    cache = _read(cache_file())
    if key in cache:
        return cache[key]
    decision = _measure(path, max_length, threads)
    cache[key] = decision
    _write(cache_file(), cache)
    log.info("backend auto: %s (%s)", decision["backend"], decision["why"])
    return decision


def cached_choice(path: Path, threads: int | None = None) -> dict | None:
    """The decision made for this model on this CPU, if one was (for /metadata in another process)."""
    return _read(cache_file()).get(_key(path, threads))


def _key(path: Path, threads: int | None) -> str:
    from .modeling import content_hash

    return f"{cpu_key()}|threads={threads or len(os.sched_getaffinity(0))}|{content_hash(path)}"


MIN_AGREEMENT = 0.99  # int8's label agreement with fp32 on the validation split, measured at export


def candidates(path: Path) -> list[str]:
    from .backends import BF16_SIDECAR
    from .int8 import ARTEFACT, SIDECAR

    bf16 = has_bf16() and _agrees(path / BF16_SIDECAR)
    int8 = (path / ARTEFACT).is_file() and _agrees(path / SIDECAR)
    return ["torch"] + (["bf16"] if bf16 else []) + (["int8"] if int8 else [])


def _agrees(sidecar: Path) -> bool:
    """Whether `kazstance export` found the backend agreeing with fp32 on the validation split
    (where it was not run, or not with a validation split, the probe alone judges)."""
    agreement = _read(sidecar).get("validation_label_agreement")
    return agreement is None or agreement >= MIN_AGREEMENT


def _measure(path: Path, max_length: int, threads: int | None) -> dict:
    from .backends import open_backend
    from .predictor import Predictor, set_threads

    set_threads(threads)
    measured: dict[str, float | str] = {}
    reference = None
    for name in candidates(path):
        try:
            predictor = Predictor(backend=open_backend(path, name, max_length), name=name)
        except Exception as err:  # noqa: BLE001 - a stale artefact, a missing runtime: not a candidate
            measured[name] = f"unavailable: {type(err).__name__}: {err}"
            continue
        predictions, probs = predictor.predict_with_proba(PROBE)
        platforms = [p.platform for p in predictions]
        if reference is None:
            reference, reference_platforms = probs, platforms  # fp32 comes first
        elif (probs.argmax(1) != reference.argmax(1)).any() or np.abs(probs - reference).max() > MAX_PROB_DIFF:
            measured[name] = f"out: differs from fp32 on the probe (largest probability change {np.abs(probs - reference).max():.3f})"
            continue
        elif platforms != reference_platforms:
            measured[name] = "out: names another platform than fp32 on the probe"
            continue
        best = min(_seconds(predictor) for _ in range(3))
        measured[name] = round(len(PROBE) / best, 1)
    speeds = {name: v for name, v in measured.items() if isinstance(v, float)}
    winner = max(speeds, key=speeds.get)
    return {"backend": winner, "why": f"fastest with fp32's predictions on this CPU ({cpu_key()})",
            "measured": measured}


def _seconds(predictor) -> float:
    start = time.perf_counter()
    predictor.predict(PROBE)
    return time.perf_counter() - start


def _read(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _write(path: Path, cache: dict) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(cache, indent=1), encoding="utf-8")
        tmp.replace(path)
    except OSError as err:  # a read-only home: decide again next time
        log.warning("cannot cache the backend choice in %s: %s", path, err)
