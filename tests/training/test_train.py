"""End to end: the smoke config trains, writes every artefact and registers in a private BentoML home."""

import json
from pathlib import Path

import pytest

from kazstance.predictor import Predictor
from training.config import load_config
from training.train import main

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory):
    """Every 10th statement of the project's splits: small, but all labels and languages."""
    out = tmp_path_factory.mktemp("mini")
    for split in ("train", "validation", "test"):
        lines = (REPO / "data" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()
        (out / f"{split}.jsonl").write_text("\n".join(lines[::10]) + "\n", encoding="utf-8")
    return out


def overrides(data_dir: Path, out_dir: Path) -> list[str]:
    return [f"data.train={data_dir / 'train.jsonl'}", f"data.validation={data_dir / 'validation.jsonl'}",
            f"data.test={data_dir / 'test.jsonl'}", f"output.dir={out_dir}"]


@pytest.fixture(scope="module")
def smoke_run(mini_data, tmp_path_factory, bentoml_home):
    out = tmp_path_factory.mktemp("runs")
    return main(load_config(REPO / "configs" / "smoke.yaml", overrides(mini_data, out)))


def test_smoke_run_writes_every_artefact(smoke_run):
    expected = {"model.safetensors", "config.json", "tokenizer.json", "kazstance.json", "metrics.json",
                "confusion_matrix.png", "training_curve.png", "config.resolved.yaml", "README.md"}
    assert expected <= {p.name for p in smoke_run.iterdir()}
    # OpenVINO's .bin files are raw tensor bytes their XML graphs point into, never unpickled.
    from kazstance.openvino import INT8_WEIGHTS, WEIGHTS

    pickles = [p for p in [*smoke_run.glob("*.bin"), *smoke_run.glob("*.pt")] if p.name not in (WEIGHTS, INT8_WEIGHTS)]
    assert not pickles, "no pickle files"
    for weights in (WEIGHTS, INT8_WEIGHTS):
        assert not (smoke_run / weights).read_bytes()[:2] in (b"\x80\x02", b"\x80\x04", b"PK")
    assert not (smoke_run / "_checkpoints").exists()


def test_smoke_run_measures_the_parity_backend_auto_needs(smoke_run):
    from kazstance import openvino
    from kazstance.backend_choice import parity_held
    from kazstance.backends import BF16_SIDECAR
    from kazstance.int8 import weights_digest

    bf16 = json.loads((smoke_run / BF16_SIDECAR).read_text())
    ov = json.loads((smoke_run / openvino.SIDECAR).read_text())
    for name in (openvino.GRAPH, openvino.WEIGHTS, openvino.INT8_GRAPH, openvino.INT8_WEIGHTS):
        assert (smoke_run / name).is_file(), name
    for sidecar in (bf16, ov):  # the final weights, platform head included
        assert sidecar["weights_sha256"] == weights_digest(smoke_run)
    for info in (bf16, ov["f32"], ov["bf16"], ov["int8"]):
        assert 0 <= info["validation_label_agreement"] <= 1 and info["temperature"] > 0
        assert parity_held(info) == (info["validation_label_agreement"] >= 0.99 and info["validation_macro_f1_delta"] >= -0.005)


def test_smoke_run_metadata_and_metrics(smoke_run):
    meta = json.loads((smoke_run / "kazstance.json").read_text())
    assert meta["temperature"] > 0 and len(meta["data_fingerprint"]) == 64
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    for split in ("validation", "test"):
        assert 0.0 <= metrics[split]["macro_f1"] <= 1.0 and metrics[split]["n"] > 0
    config = json.loads((smoke_run / "config.json").read_text())
    # The stance outputs first, then one per platform of the training data (the platform head).
    names = [config["id2label"][str(i)] for i in range(len(config["id2label"]))]
    platforms = sorted({json.loads(line)["platform"] for line in (REPO / "data" / "train.jsonl").read_text().splitlines()[::10]})
    assert names == ["support", "oppose", "neutral", *(f"platform:{p}" for p in platforms)]
    assert meta["platforms"] == platforms
    for split in ("validation", "test"):
        platform = metrics[split]["platform"]
        assert platform["n"] == metrics[split]["n"] and 0.0 <= platform["macro_f1"] <= 1.0
        assert set(platform["per_platform"]) <= set(platforms)
    card = (smoke_run / "README.md").read_text()
    assert card.startswith("---\n") and "base_model: tiny-random" in card and "macro_f1" in card


def test_smoke_run_is_registered_in_the_bentoml_store(smoke_run):
    import bentoml

    model = bentoml.models.get("kazstance:latest")
    assert model.info.labels["run"] == "smoke"
    assert model.info.metadata["data_fingerprint"] == json.loads((smoke_run / "kazstance.json").read_text())["data_fingerprint"]
    assert set(model.info.metadata["weights_sha256"]) == {"model.safetensors"}
    assert Predictor.load("kazstance:latest").predict(["TikTok-ты жабу керек"])[0].label in ("support", "oppose", "neutral")


def test_the_platform_head_names_a_platform_beside_the_stance(smoke_run):
    predictor = Predictor.from_dir(smoke_run)
    assert predictor.labels == ("support", "oppose", "neutral") and "general" in predictor.platforms
    prediction = predictor.predict(["TikTok-ты жабу керек"])[0]
    assert prediction.platform in predictor.platforms
    assert set(prediction.platform_scores) == set(predictor.platforms)
    assert abs(sum(prediction.platform_scores.values()) - 1) < 1e-4 and abs(sum(prediction.scores.values()) - 1) < 1e-4
    assert predictor.logits(["x y"]).shape == (1, 3)  # the temperature is fitted on stance logits alone


def test_a_frozen_platform_head_is_fitted_after_the_stance(mini_data, tmp_path):
    run = main(load_config(REPO / "configs" / "smoke.yaml",
                           [*overrides(mini_data, tmp_path), "model.platform_head=frozen", "output.bentoml_store=false"]))
    meta = json.loads((run / "kazstance.json").read_text())
    assert "general" in meta["platforms"] and "platform" in json.loads((run / "metrics.json").read_text())["test"]
    assert Predictor.from_dir(run).predict(["TikTok"])[0].platform in meta["platforms"]


def test_platform_head_loss_adds_the_platform_cross_entropy():
    import torch

    from training.train import weighted_trainer_class

    class Model(torch.nn.Module):
        def forward(self, logits):
            return type("Out", (), {"logits": logits})()

    logits = torch.tensor([[2.0, 0.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 0.0, 3.0]])
    inputs = lambda platforms: {"logits": logits, "labels": torch.tensor([0, 1]), "weight": torch.tensor([1.0, 1.0]),
                                "platform_labels": torch.tensor(platforms)}
    trainer = object.__new__(weighted_trainer_class(3, platform_loss_weight=0.5))
    stance = torch.nn.functional.cross_entropy(logits[:, :3], torch.tensor([0, 1]))
    platform = torch.nn.functional.cross_entropy(logits[:, 3:], torch.tensor([0, 1]))
    assert torch.isclose(trainer.compute_loss(Model(), inputs([0, 1])), stance + 0.5 * platform)
    only_first = torch.nn.functional.cross_entropy(logits[:1, 3:], torch.tensor([0]))
    assert torch.isclose(trainer.compute_loss(Model(), inputs([0, -100])), stance + 0.5 * only_first)
    assert torch.isclose(trainer.compute_loss(Model(), inputs([-100, -100])), stance)


def test_resolved_config_reloads_to_the_same_config(smoke_run):
    assert load_config(smoke_run / "config.resolved.yaml").run_name == "smoke"


def test_tfidf_baseline_roundtrips_through_the_predictor(mini_data, tmp_path):
    from sklearn.feature_extraction.text import TfidfVectorizer  # noqa: F401  (baseline dependency)

    run = main(load_config(REPO / "configs" / "baseline-tfidf.yaml", overrides(mini_data, tmp_path)))
    metrics = json.loads((run / "metrics.json").read_text())
    # Reloading from safetensors must reproduce the in-training numbers exactly, and the fit
    # must clearly beat chance on its own training data (a scrambled reload would not).
    train_rows = [json.loads(line) for line in (mini_data / "train.jsonl").read_text().splitlines()]
    predictor = Predictor.from_dir(run)
    train_acc = sum(p.label == r["label"] for p, r in zip(predictor.predict([r["text"] for r in train_rows]), train_rows)) / len(train_rows)
    assert train_acc > 0.9
    from training.evaluate import evaluate_file

    again = evaluate_file(run, mini_data / "test.jsonl", out_dir=tmp_path / "eval")
    assert again["macro_f1"] == pytest.approx(metrics["test"]["macro_f1"])


def test_several_files_named_tests_calibration_and_weights(mini_data, tmp_path, bentoml_home):
    """Train and validation pool several files; every named test file is scored; the first is the headline."""
    news = tmp_path / "news.jsonl"
    rows = [json.loads(line) for line in (mini_data / "test.jsonl").read_text().splitlines()]
    news.write_text("".join(json.dumps({**r, "clarity": "borderline" if i % 3 else "clear"}, ensure_ascii=False) + "\n"
                            for i, r in enumerate(rows)), encoding="utf-8")
    run = main(load_config(REPO / "configs" / "smoke.yaml", [
        f"data.train=[{mini_data / 'train.jsonl'}, {news}]", f"data.validation={mini_data / 'validation.jsonl'}",
        f"data.calibration=[{news}]", "data.calibration_only=[clarity=clear]",
        f"data.test={{news: {news}, handwritten: {mini_data / 'test.jsonl'}}}",
        "train.sample_weights={clarity: {borderline: 0.5}}", "train.head_learning_rate=0.01",
        f"output.dir={tmp_path / 'runs'}", "output.bentoml_store=false"]))
    meta = json.loads((run / "kazstance.json").read_text())
    assert meta["headline"] == "news" and list(meta["metrics"]) == ["validation", "news", "handwritten"]
    assert meta["metrics"]["news"]["clear"]["n"] == len(rows[::3])  # every third item is clear
    assert "clear" not in meta["metrics"]["handwritten"]  # no borderline items there: nothing to separate
    assert "news" in (run / "README.md").read_text()
