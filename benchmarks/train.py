"""How long training the default model takes on this machine, and what it scores.

Runs `kazstance train --config CONFIG` exactly as a user would (a subprocess, the whole CLI), then
writes `results/train-<run>.json`: wall seconds, the CPU model with the ISA flags that matter for
matrix work, cores, the load average before and after (a busy machine shows up there, not
silently in the time), and the run's metrics from its `kazstance.json`.

    python benchmarks/train.py --config configs/default.yaml
    python benchmarks/train.py --config configs/default.yaml --set run_name=default-bench --set output.bentoml_store=false

Target (issue 10): the default model trains in at most 20 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
TARGET_SECONDS = 20 * 60


def machine() -> dict:
    from kazstance.backend_choice import cpu, isa

    return {"cpu": cpu()[0] or platform.processor(), "cores": len(os.sched_getaffinity(0)),
            "isa": isa(), "python": platform.python_version()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, default=REPO / "configs" / "default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="Passed on to kazstance train.")
    args = parser.parse_args()

    from training.config import load_config

    config = load_config(args.config, args.overrides)
    info = {"machine": machine(), "config": str(args.config), "overrides": args.overrides,
            "load_average_before": os.getloadavg()}
    command = [sys.executable, "-m", "kazstance.cli", "train", "--config", str(args.config)]
    for assignment in args.overrides:
        command += ["--set", assignment]
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=REPO)
    info["wall_seconds"] = round(time.perf_counter() - start, 1)
    info["load_average_after"] = os.getloadavg()
    run_dir = config.output.dir if config.output.dir.is_absolute() else REPO / config.output.dir
    meta = json.loads((run_dir / config.run_name / "kazstance.json").read_text(encoding="utf-8"))
    info["metrics"] = meta["metrics"]
    info["target_seconds"] = TARGET_SECONDS
    info["within_target"] = info["wall_seconds"] <= TARGET_SECONDS
    out = REPO / "benchmarks" / "results" / f"train-{config.run_name}.json"
    out.write_text(json.dumps(info, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(yaml.safe_dump({k: info[k] for k in ("machine", "wall_seconds", "within_target")}, sort_keys=False))
    print(f"written to {out}")


if __name__ == "__main__":
    main()
