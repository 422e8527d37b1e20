"""Configs: every shipped file validates; mistakes name the file and the key."""

from pathlib import Path

import pytest

from training.config import ConfigError, load_config

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def test_there_are_the_four_documented_configs():
    assert {p.stem for p in CONFIGS} >= {"default", "xlmr-base", "baseline-tfidf", "smoke"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    config = load_config(path)
    assert config.run_name


def test_unknown_key_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run_name: x\ntrain:\n  epocs: 3\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.epocs: Extra inputs are not permitted"):
        load_config(path)


def test_wrong_type_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("run_name: x\ntrain:\n  batch_size: many\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: train\.batch_size"):
        load_config(path)


def test_overrides_apply_before_validation(tmp_path):
    config = load_config(Path("configs/smoke.yaml"), ["train.epochs=3", "model.max_length=32", "output.bentoml_store=false"])
    assert (config.train.epochs, config.model.max_length, config.output.bentoml_store) == (3, 32, False)
    with pytest.raises(ConfigError, match="train.nope"):
        load_config(Path("configs/smoke.yaml"), ["train.nope=1"])
    with pytest.raises(ConfigError, match="expected KEY=VALUE"):
        load_config(Path("configs/smoke.yaml"), ["train.epochs"])


def test_broken_yaml_is_reported(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("run_name: [unclosed\n")
    with pytest.raises(ConfigError, match="broken.yaml: not valid YAML"):
        load_config(path)


def test_data_takes_one_file_or_several_and_named_tests(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("run_name: x\ndata:\n  train: [a.jsonl, b.jsonl]\n  validation: v.jsonl\n"
                    "  test: {news: n.jsonl, handwritten: t.jsonl}\ntrain:\n  sample_weights: {clarity: {borderline: 0.5}}\n")
    config = load_config(path)
    assert [p.name for p in config.data.train] == ["a.jsonl", "b.jsonl"]
    assert [p.name for p in config.data.validation] == ["v.jsonl"] and config.data.calibration is None
    assert list(config.data.test) == ["news", "handwritten"]  # order kept: the first is the headline
    assert config.train.sample_weights == {"clarity": {"borderline": 0.5}}
    with pytest.raises(ConfigError, match="data.train"):
        load_config(path, ["data.train=[]"])
