"""Specification of resume: a real run, SIGKILLed mid-way (twice for Parquet) and resumed, ends
with exactly the output of an uninterrupted run (no duplicate row, no missing row), in every
output format;
and a resume is refused when anything that changes the output changed, the model's weights
and the CSV escaping included."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from score_data import TEXTS, encode, read_rows, write, write_archive
from serving import writers
from serving.score import score_files
from serving.writers import PROGRESS, ResumeError, work_dir

FORMULAS = ["=HYPERLINK(\"http://x\") керек", "-бұғаттау керек", "@SUM(1) VPN"]  # escaped in CSV


def make_inputs(folder: Path) -> list[Path]:
    """About 1,000 records over several kinds, with bad rows: 15 chunks at --batch-size 4."""
    many = [f"{t} ({i})" for i in range(40) for t in TEXTS]  # 320 statements
    bad = b'{"text": "\xff"}\n{broken\n'
    return [
        write("jsonl", folder, many, name="a"),
        write("csv.gz", folder, many, name="b"),
        write_archive(folder / "c.zip", {"x.jsonl": encode("jsonl", many[:200]) + bad, "y.tsv": encode("tsv", many[200:])}),
        write("jsonl", folder, FORMULAS, name="d"),
    ]


def checkpointed_parts(out: Path) -> int:
    try:
        return json.loads((work_dir(out) / PROGRESS).read_text())["parts"]
    except (OSError, ValueError):  # not there yet, or caught mid-rename
        return 0


def run_and_kill(cmd: list[str], out: Path, after_parts: int) -> None:
    """Start the command, SIGKILL it as soon as `after_parts` chunks are checkpointed."""
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while checkpointed_parts(out) < after_parts and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run finished before it could be killed; make the input larger"


@pytest.mark.parametrize("suffix, kills", [(".parquet", 2), (".jsonl", 1), (".csv", 1)])
def test_a_run_killed_and_resumed_gives_the_uninterrupted_output(tmp_path, tiny_model_dir, suffix, kills):
    inputs = make_inputs(tmp_path / "in")
    expected = tmp_path / f"expected{suffix}"
    score_files(inputs, expected, model=str(tiny_model_dir), batch_size=4, threads=1, keep_text=True)

    out = tmp_path / f"scores{suffix}"
    cmd = [sys.executable, "-m", "kazstance.cli", "score", *map(str, inputs), "--output", str(out),
           "--model", str(tiny_model_dir), "--batch-size", "4", "--keep-text", "--threads", "1", "--no-progress"]
    run_and_kill(cmd, out, after_parts=3)
    if kills == 2:  # a resumed run killed in turn resumes as well
        first = checkpointed_parts(out)
        run_and_kill(cmd + ["--resume"], out, after_parts=first + 5)
        assert checkpointed_parts(out) > first
    assert not out.exists()

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed after" in done.stdout
    assert not work_dir(out).exists()
    if suffix == ".parquet":  # the same table; row groups may be cut elsewhere
        assert pq.read_table(out).equals(pq.read_table(expected))
    else:
        assert out.read_bytes() == expected.read_bytes()
    rows = read_rows(out)
    assert len(rows) == 3 * 320 + 2 + len(FORMULAS)
    if suffix == ".csv":
        assert [r["text"] for r in rows[-3:]] == ["'" + t for t in FORMULAS]


def interrupt_after_first_chunk(monkeypatch, inputs: list[Path], out: Path, **options) -> None:
    """Run `score_files`, stopped (as by Ctrl-C) once its first chunk is committed."""
    commit = writers.PartWriter.commit

    def commit_then_stop(self, table, state):
        commit(self, table, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(writers.PartWriter, "commit", commit_then_stop)
    with pytest.raises(KeyboardInterrupt):
        score_files(inputs, out, **options)
    monkeypatch.setattr(writers.PartWriter, "commit", commit)
    assert checkpointed_parts(out) == 1


def retrain(model: Path) -> None:
    """What retraining does to a model folder: new weights under the same name."""
    from safetensors.torch import load_file, save_file

    weights = model / "model.safetensors"
    tensors = load_file(weights)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name] + 0.01
    save_file(tensors, weights, metadata={"format": "pt"})


def test_resume_is_refused_once_the_model_folder_was_retrained(tmp_path, tiny_model_dir, monkeypatch):
    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    inputs, out = [write("jsonl", tmp_path / "in", TEXTS * 4)], tmp_path / "scores.jsonl"
    interrupt_after_first_chunk(monkeypatch, inputs, out, model=str(model), batch_size=1, threads=1)

    retrain(model)  # same folder, same name: only the weights tell the two models apart
    result = CliRunner().invoke(app, ["score", *map(str, inputs), "-o", str(out), "--model", str(model),
                                      "--batch-size", "1", "--threads", "1", "--no-progress", "--resume"])
    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())  # the console wraps long lines
    assert "changed: model_weights)" in message and "rerun without --resume" in message
    assert checkpointed_parts(out) == 1 and not out.exists()  # the interrupted run is left as it was


def test_resume_is_refused_when_csv_escaping_changes_and_allowed_when_it_does_not(tmp_path, tiny_model_dir,
                                                                                   monkeypatch):
    inputs, out = [write("jsonl", tmp_path / "in", FORMULAS * 8)], tmp_path / "scores.csv"
    options = dict(model=str(tiny_model_dir), batch_size=1, threads=1, keep_text=True)
    interrupt_after_first_chunk(monkeypatch, inputs, out, **options)

    with pytest.raises(ResumeError, match=r"changed: escape_formulas\)"):
        score_files(inputs, out, resume=True, escape_formulas=False, **options)
    summary = score_files(inputs, out, resume=True, **options)
    assert summary.resumed_rows == 16
    assert [r["text"] for r in read_rows(out)] == ["'" + t for t in FORMULAS * 8]
