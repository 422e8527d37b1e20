"""Specification of resume: a real run, SIGKILLed twice mid-way and resumed, ends with exactly
the output of an uninterrupted run (no duplicate row, no missing row)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from score_data import TEXTS, encode, read_rows, write, write_archive
from serving.score import score_files
from serving.writers import PROGRESS, work_dir


def make_inputs(folder: Path) -> list[Path]:
    """About 3,000 records over several kinds, with bad rows: a run of a few seconds."""
    many = [f"{t} ({i})" for i in range(125) for t in TEXTS]  # 1,000 statements
    bad = b'{"text": "\xff"}\n{broken\n'
    return [
        write("jsonl", folder, many, name="a"),
        write("csv.gz", folder, many, name="b"),
        write_archive(folder / "c.zip", {"x.jsonl": encode("jsonl", many[:500]) + bad, "y.tsv": encode("tsv", many[500:])}),
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


def test_a_run_killed_twice_and_resumed_gives_the_uninterrupted_output(tmp_path, tiny_model_dir):
    inputs = make_inputs(tmp_path / "in")
    expected = tmp_path / "expected.parquet"
    score_files(inputs, expected, model=str(tiny_model_dir), batch_size=4, threads=1, keep_text=True)

    out = tmp_path / "scores.parquet"
    cmd = [sys.executable, "-m", "kazstance.cli", "score", *map(str, inputs), "--output", str(out),
           "--model", str(tiny_model_dir), "--batch-size", "4", "--keep-text", "--threads", "1", "--no-progress"]
    run_and_kill(cmd, out, after_parts=3)
    first = checkpointed_parts(out)
    run_and_kill(cmd + ["--resume"], out, after_parts=first + 20)
    assert checkpointed_parts(out) > first and not out.exists()

    done = subprocess.run(cmd + ["--resume"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "resumed after" in done.stdout
    got, want = read_rows(out), read_rows(expected)
    assert len(got) == len(want) == 3002
    assert got == want
    assert not work_dir(out).exists()
