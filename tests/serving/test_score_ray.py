"""Specification of `--engine ray`: on a local Ray instance, the same rows as the local engine.

Scores may differ in the last float digit (Ray forms other batches, so padding differs); every
other column must be identical.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import pytest
import ray
from typer.testing import CliRunner

from kazstance.cli import app
from kazstance.modeling import BENTO_MODEL_NAME
from score_data import TEXTS, encode, read_rows, write, write_archive
from serving import ray_engine, writers
from serving.score import score_files


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level=logging.WARNING)
    yield
    ray.shutdown()


def mixed_inputs(folder):
    many = [f"{t} ({i})" for i in range(20) for t in TEXTS]
    return [write("jsonl", folder, many, name="a"),
            write_archive(folder / "b.tgz", {"x.csv": encode("csv", many[:50]) + b'9,"broken"x\n',
                                             "y.txt": encode("txt", many[50:100]), "z.bin": b"?"}),
            folder / "missing.parquet"]


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert {k: v for k, v in g.items() if not k.startswith("score_")} == \
               {k: v for k, v in w.items() if not k.startswith("score_")}
        assert {k: v for k, v in g.items() if k.startswith("score_")} == \
               pytest.approx({k: v for k, v in w.items() if k.startswith("score_")}, abs=1e-5)


def test_ray_engine_writes_what_the_local_engine_writes(tmp_path, tiny_model_dir, local_ray):
    inputs = mixed_inputs(tmp_path / "in")
    (tmp_path / "in" / "dated.jsonl").write_text('{"id": "d", "text": "TikTok", "date": "2024-03-01"}\n', encoding="utf-8")
    inputs.append(tmp_path / "in" / "dated.jsonl")
    local = score_files(inputs, tmp_path / "local.parquet", model=str(tiny_model_dir), threads=1, batch_size=4,
                        keep_text=True, keep_fields=["date"])
    result = CliRunner().invoke(app, ["score", *map(str, inputs), "-o", str(tmp_path / "ray.parquet"),
                                      "--model", str(tiny_model_dir), "--engine", "ray", "--threads", "1",
                                      "--batch-size", "4", "--keep-text", "--no-progress", "--keep-field", "date"])
    assert result.exit_code == 0, result.output
    counts = sorted(local.encodings.items(), key=lambda item: (-item[1], item[0]))
    assert counts and "encodings: " + ", ".join(f"{e} {n}" for e, n in counts) \
        in result.output  # the Ray engine counts the encodings it read, as the local one does
    want = read_rows(tmp_path / "local.parquet")
    assert_same_rows(read_rows(tmp_path / "ray.parquet"), want)
    assert sum(r["error"] is not None for r in want) == 3
    assert want[-1]["date"] == "2024-03-01"  # kept fields travel through the actors too


def test_ray_engine_resumes_an_interrupted_run_and_scores_documents(tmp_path, tiny_model_dir, local_ray, monkeypatch):
    inputs = mixed_inputs(tmp_path / "in")
    options = dict(model=str(tiny_model_dir), threads=1, batch_size=2, unit="document")
    score_files(inputs, tmp_path / "local.jsonl", **options)

    # Interrupt a local run after two committed chunks, then finish it on Ray.
    commit, calls = writers.PartWriter.commit, []

    def crash_after_two(self, table, state):
        if len(calls) == 2:
            raise KeyboardInterrupt
        calls.append(state)
        commit(self, table, state)

    monkeypatch.setattr(writers.PartWriter, "commit", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        score_files(inputs, tmp_path / "ray.jsonl", **options)
    monkeypatch.setattr(writers.PartWriter, "commit", commit)
    summary = score_files(inputs, tmp_path / "ray.jsonl", engine="ray", resume=True, **options)

    assert summary.resumed_rows == 64
    assert_same_rows(read_rows(tmp_path / "ray.jsonl"), read_rows(tmp_path / "local.jsonl"))


def store(model_dir: Path) -> str:
    """Register a copy of `model_dir` as a new `kazstance:<version>` (now `kazstance:latest`)."""
    import bentoml

    with bentoml.models.create(BENTO_MODEL_NAME) as entry:
        for item in model_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, Path(entry.path) / item.name)
    return str(entry.tag)


def actors_model(monkeypatch, **options) -> str:
    """The model `score_files` hands the Ray actors (captured instead of starting Ray)."""
    given = []
    monkeypatch.setattr(ray_engine, "run_ray", lambda files, opts, *args, **kwargs: given.append(opts.model))
    score_files([], **options, engine="ray", threads=1)
    return given[0]


def test_ray_actors_are_given_the_drivers_version_and_an_absolute_folder(tmp_path, tiny_model_dir, bentoml_home,
                                                                        monkeypatch):
    version = store(tiny_model_dir)
    assert actors_model(monkeypatch, output=tmp_path / "a.jsonl", model="kazstance:latest") == version
    monkeypatch.chdir(tiny_model_dir.parent)  # the actors' working folder is not the driver's
    folder = actors_model(monkeypatch, output=tmp_path / "b.jsonl", model=tiny_model_dir.name)
    assert folder == str(tiny_model_dir.resolve())


def test_a_version_registered_during_a_run_does_not_reach_the_actors(tmp_path, tiny_model_dir, bentoml_home,
                                                                    local_ray, monkeypatch):
    loaded = store(tiny_model_dir)
    run_ray = ray_engine.run_ray

    def register_then_run(*args, **kwargs):  # the driver has loaded `kazstance:latest`; the actors start next
        store(tiny_model_dir)
        run_ray(*args, **kwargs)

    monkeypatch.setattr(ray_engine, "run_ray", register_then_run)
    out = tmp_path / "ray.jsonl"
    score_files([write("jsonl", tmp_path / "in")], out, model="kazstance:latest", engine="ray", threads=1, batch_size=4)
    import bentoml

    assert str(bentoml.models.get("kazstance:latest").tag) != loaded
    assert {r["model"] for r in read_rows(out)} == {loaded}  # the actors scored with the driver's version
