"""Specification of `--engine ray`: on a local Ray instance, the same rows as the local engine.

Scores may differ in the last float digit (Ray forms other batches, so padding differs); every
other column must be identical.
"""

from __future__ import annotations

import logging

import pytest
import ray
from typer.testing import CliRunner

from kazstance.cli import app
from score_data import TEXTS, encode, read_rows, write, write_archive
from serving import writers
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
    score_files(inputs, tmp_path / "local.parquet", model=str(tiny_model_dir), threads=1, batch_size=4, keep_text=True)
    result = CliRunner().invoke(app, ["score", *map(str, inputs), "-o", str(tmp_path / "ray.parquet"),
                                      "--model", str(tiny_model_dir), "--engine", "ray", "--threads", "1",
                                      "--batch-size", "4", "--keep-text", "--no-progress"])
    assert result.exit_code == 0, result.output
    want = read_rows(tmp_path / "local.parquet")
    assert_same_rows(read_rows(tmp_path / "ray.parquet"), want)
    assert sum(r["error"] is not None for r in want) == 3


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
