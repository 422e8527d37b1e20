"""Serving benchmark: the BentoML service against a naive pipeline server, same model, same machine, same run.

It owns the numbers in `benchmarks/results/serve.json` and the serving table of `benchmarks/README.md`.
The recipe, top to bottom:

1. pick single short statements (10-25 words) from the test split, or the raw data before splits exist;
2. start the real service (`bentoml serve serving.service:KazStance`, the model registered in a
   private BENTOML_HOME when given as a folder), wait for /readyz, and at each concurrency warm up,
   then run `benchmarks/loadgen.py` in its own process for a bounded number of requests;
3. stop it, start the naive peer (`benchmarks/naive_server.py`) on the same model folder, same load;
4. write per-service, per-concurrency p50/p95/p99, throughput and errors, the machine, the settings
   used and `speedup_vs_naive_c32`; print the README table.

The servers run one after the other, never together, each with all the cores (torch threads =
cores unless `--threads` says otherwise), so neither competes with the other for CPU. The load
generator shares the machine with whichever server runs: a real client would too.

    python benchmarks/serve.py --model /tmp/standin-e5/model
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
TARGETS = {"kazstance_p50_ms_at_c1_max": 40.0, "speedup_vs_naive_c32_min": 2.0, "errors_at_c32": 0,
           "service_vs_raw_predictor_c32_min": 0.9}


# ------------------------------------------------------------------------------------- 1. statements


def pick_statements(data_dir: Path, limit: int, seed: int = 13) -> tuple[list[str], str]:
    """Real short statements: 10-25 words, one line each, a fixed-seed sample; and where they came from."""
    test = data_dir / "test.jsonl"
    files = [test] if test.is_file() else sorted((data_dir / "raw").glob("*.jsonl"))
    if not files:
        raise SystemExit(f"no statements: neither {test} nor {data_dir / 'raw'}/*.jsonl exists")
    texts = []
    for path in files:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                text = " ".join(json.loads(line)["text"].split())  # one line, single spaces
                if 10 <= len(text.split()) <= 25:
                    texts.append(text)
    random.Random(seed).shuffle(texts)
    source = str(test.relative_to(REPO) if test.is_file() and test.is_relative_to(REPO) else
                 ", ".join(str(f.relative_to(REPO)) if f.is_relative_to(REPO) else str(f) for f in files))
    return texts[:limit], source


# ------------------------------------------------------------------------------------ 2-3. servers


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A server in its own process group, started, waited for and stopped; its output goes to a log."""

    def __init__(self, name: str, argv: list[str], env: dict, port: int, log_dir: Path):
        self.name, self.argv, self.env, self.port = name, argv, env, port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = log_dir / f"{name}-{port}.log"

    def __enter__(self) -> "Server":
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(self.argv, cwd=REPO, env=self.env, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        return self

    def wait_ready(self, timeout_s: float) -> float:
        start = time.time()
        while time.time() - start < timeout_s:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log_path.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return time.time() - start
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"{self.name} not ready after {timeout_s:.0f} s; see {self.log_path}")

    def __exit__(self, *exc) -> None:
        # BentoML's supervisor stops its workers on SIGTERM; whatever still runs after 30 s is killed.
        tree = list(process_tree(self.proc.pid))
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        for pid in tree:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:  # already gone, as it should be
                pass
        self.proc.wait()
        self.log.close()


def recorded_env(env: dict) -> dict:
    """The environment variables that change how fast a server runs, for the results file."""
    return {k: v for k, v in sorted(env.items())
            if k.startswith(("KAZSTANCE_", "OMP_", "MKL_", "GOMP_")) or k == "BENTOML_CONFIG_OPTIONS"}


def service_server(tag: str, args, work: Path, bentoml_home: str | None) -> tuple[Server, dict]:
    """`bentoml serve serving.service:KazStance`, with the service's settings set as `kazstance serve` does."""
    env = {**os.environ, "KAZSTANCE_MODEL": tag, "KAZSTANCE_BACKEND": args.backend,
           "KAZSTANCE_WORKERS": str(args.workers), "BENTOML_DO_NOT_TRACK": "True", "HF_HUB_OFFLINE": "1"}
    if bentoml_home:
        env["BENTOML_HOME"] = bentoml_home
    if args.bentoml_options:
        env["BENTOML_CONFIG_OPTIONS"] = args.bentoml_options
    # Only the knobs asked for are set: otherwise the service's own defaults are what gets measured.
    for var, value in (("KAZSTANCE_THREADS", args.threads), ("KAZSTANCE_MAX_BATCH_SIZE", args.max_batch_size),
                       ("KAZSTANCE_MAX_LATENCY_MS", args.max_latency_ms)):
        if value is not None:
            env[var] = str(value)
    port = free_port()
    argv = [sys.executable, "-m", "bentoml", "serve", args.service, "--host", "127.0.0.1", "--port", str(port)]
    settings = {"command": f"bentoml serve {args.service}", "backend": args.backend,
                "workers": args.workers, "threads_per_worker": args.threads or max(1, cores() // args.workers),
                "env": recorded_env(env)}
    return Server("kazstance", argv, env, port, work), settings


def naive_server(model_dir: Path, serialize: bool, args, work: Path) -> tuple[Server, dict]:
    threads = cores()  # the peer always gets every core: its best single-process setting
    port = free_port()
    argv = [sys.executable, str(HERE / "naive_server.py"), "--model", str(model_dir), "--port", str(port),
            "--threads", str(threads), "--max-length", str(args.max_length)] + (["--serialize"] if serialize else [])
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    name = "naive_serialized" if serialize else "naive"
    settings = {"command": "python benchmarks/naive_server.py" + (" --serialize" if serialize else ""),
                "server": "http.server.ThreadingHTTPServer", "torch_threads": threads, "serialize": serialize,
                "env": recorded_env(env)}
    return Server(name, argv, env, port, work), settings


def process_tree(root: int) -> dict[int, float]:
    """A process and its live descendants: pid -> CPU seconds (user + system) used so far.

    A tree, not a process group: BentoML's supervisor starts its workers in groups of their own.
    """
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()  # the name may hold spaces; ")" ends it
        except OSError:  # the process ended while we looked
            continue
        # fields after the name: state(0) ppid(1) ... utime(11) stime(12)
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    tree, frontier = {}, [root]
    while frontier:
        pid = frontier.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid][1] / os.sysconf("SC_CLK_TCK")
            frontier.extend(child for child, (ppid, _) in stats.items() if ppid == pid)
    return tree


def tree_cpu_s(root: int) -> float:
    return sum(process_tree(root).values())


def machine_busy_s() -> float:
    """CPU seconds all processes on the machine have used since boot (the `cpu` line of /proc/stat)."""
    user, nice, system, _idle, _iowait, irq, softirq, steal = map(int, Path("/proc/stat").read_text().split()[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def wait_for_quiet(max_wait_s: float, threshold: float = 0.15, sample_s: float = 3.0) -> dict:
    """Wait (at most `max_wait_s`) until the rest of the machine uses under `threshold` of its CPU.

    On a machine shared with other jobs, a level measured while they run says more about them
    than about the server; waiting for a quiet spell is cheaper than rerunning.
    """
    start = time.perf_counter()
    while True:
        busy = machine_busy_s()
        time.sleep(sample_s)
        share = (machine_busy_s() - busy) / (sample_s * cores())
        waited = time.perf_counter() - start
        if share < threshold or waited >= max_wait_s:
            return {"waited_s": round(waited, 1), "machine_busy_share": round(share, 2)}


def measure(server: Server, texts_file: Path, levels: list[tuple[int, int]], args, work: Path) -> dict:
    """Run the load generator at each concurrency against a ready server; one report per level.

    Besides the client's report, each level records the CPU the server and the load generator used
    per request, and the share of the machine other processes took meanwhile: on a shared machine
    that share says how much to trust the wall-clock numbers; CPU per request hardly depends on it.
    """
    runs = {}
    for concurrency, requests in levels:
        out = work / f"{server.name}-c{concurrency}.json"
        warmup = max(args.warmup, 2 * concurrency)  # lets BentoML's batching optimiser settle on this load
        quiet = wait_for_quiet(args.wait_quiet) if args.wait_quiet else None
        server_cpu, busy, client_cpu = tree_cpu_s(server.proc.pid), machine_busy_s(), children_cpu_s()
        start = time.perf_counter()
        subprocess.run([sys.executable, str(HERE / "loadgen.py"), "--url", f"{server.url}/predict",
                        "--texts", str(texts_file), "--concurrency", str(concurrency), "--requests", str(requests),
                        "--warmup", str(warmup), "--max-seconds", str(args.max_seconds), "--out", str(out),
                        "--bad-share", str(args.bad_share if server.name == "kazstance" else 0)],
                       check=True, timeout=3 * args.max_seconds + 120)
        wall = time.perf_counter() - start
        server_cpu = tree_cpu_s(server.proc.pid) - server_cpu
        client_cpu = children_cpu_s() - client_cpu
        others = max(0.0, machine_busy_s() - busy - server_cpu - client_cpu)
        report = json.loads(out.read_text())
        sent = report["requests"] + warmup
        report["cpu"] = {"server_ms_per_request": round(1000 * server_cpu / sent, 1),
                         "loadgen_ms_per_request": round(1000 * client_cpu / sent, 1),
                         "other_processes_share": round(others / (wall * cores()), 2)}
        if quiet:
            report["quiet_wait"] = quiet
        runs[str(concurrency)] = report
        lat = report["latency_ms"]
        print(f"  {server.name:>16} c={concurrency:<3} p50={lat['p50']} p95={lat['p95']} p99={lat['p99']} ms  "
              f"{report['throughput_rps']} req/s  errors={report['errors']}  cpu={report['cpu']}", flush=True)
    return runs


def children_cpu_s() -> float:
    """CPU seconds used by this process's finished children (the load generator runs)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------ 4. report


def cores() -> int:
    return len(os.sched_getaffinity(0))


def machine() -> dict:
    import bentoml
    import torch
    import transformers

    from kazstance.backend_choice import cpu, isa

    return {"cores": cores(), "cpu": cpu()[0] or platform.processor(), "isa": isa(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__, "transformers": transformers.__version__,
            "bentoml": bentoml.__version__}


def markdown_table(results: dict) -> str:
    rows = ["| server | concurrency | p50 ms | p95 ms | p99 ms | req/s | errors / requests | server CPU ms/req | "
            "others' CPU share |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for name, service in results["services"].items():
        for c, run in service["runs"].items():
            lat, cpu = run["latency_ms"], run["cpu"]
            rows.append(f"| {name} | {c} | {lat['p50']} | {lat['p95']} | {lat['p99']} | {run['throughput_rps']} | "
                        f"{run['errors']} / {run['requests']} | {cpu['server_ms_per_request']} | "
                        f"{cpu['other_processes_share']:.0%} |")
    return "\n".join(rows)


def speedup(results: dict, peer: str, concurrency: str = "32") -> float | None:
    try:
        ours = results["services"]["kazstance"]["runs"][concurrency]["throughput_rps"]
        theirs = results["services"][peer]["runs"][concurrency]["throughput_rps"]
    except KeyError:
        return None
    return round(ours / theirs, 2) if theirs else None


def raw_predictor(model_dir: Path, texts: list[str], args) -> dict:
    """Statements/s of `Predictor.predict` on the texts in batches of 32, in this process, with the
    threads the service's model worker gets: the most the service could serve."""
    import gc

    from kazstance.predictor import Predictor

    threads = args.threads or max(1, cores() // args.workers)
    predictor = Predictor.load(model_dir, backend=args.backend, threads=threads, batch_size=32)
    predictor_backend = predictor.backend_name  # with auto: what it chose
    predictor.predict(texts[:32])
    best = float("inf")
    for _ in range(3):
        start = time.perf_counter()
        predictor.predict(texts)
        best = min(best, time.perf_counter() - start)
    del predictor
    gc.collect()
    return {"statements_per_s": round(len(texts) / best, 2), "threads": threads, "batch_size": 32,
            "backend": predictor_backend}


def check_targets(results: dict) -> dict:
    runs = results["services"]["kazstance"]["runs"]
    met = {}
    if "1" in runs:
        met["p50_at_c1"] = runs["1"]["latency_ms"]["p50"] is not None and \
            runs["1"]["latency_ms"]["p50"] <= TARGETS["kazstance_p50_ms_at_c1_max"]
    if results.get("service_vs_raw_predictor_c32") is not None:
        met["service_vs_raw_predictor_c32"] = results["service_vs_raw_predictor_c32"] >= TARGETS["service_vs_raw_predictor_c32_min"]
    if results.get("speedup_vs_naive_c32") is not None:
        met["speedup_at_c32"] = results["speedup_vs_naive_c32"] >= TARGETS["speedup_vs_naive_c32_min"]
        met["zero_errors_at_c32"] = runs["32"]["errors"] == 0
    if results["workload"].get("bad_share"):  # mixed load: every good request answered, no 5xx to anyone
        met["mixed_load"] = all(run["errors"] == 0 and run["http_5xx"] == 0 and not run["timed_out"]
                                and run.get("bad", {}).get("4xx", 0) == run["requests"] - run["ok"]
                                for run in runs.values())
    return {**TARGETS, "met": met}


# -------------------------------------------------------------------------------------------- main


def resolve_model(model: str, bentoml_home: str | None) -> tuple[str, Path]:
    """(BentoML tag, model folder). A folder is registered first; the service loads models by tag only."""
    if bentoml_home:
        os.environ["BENTOML_HOME"] = bentoml_home  # before bentoml is first imported, which reads it once
    import bentoml

    from serving.launch import resolve_tag

    tag = resolve_tag(model)
    return tag, Path(model).resolve() if Path(model).is_dir() else Path(bentoml.models.get(tag).path)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="model folder or BentoML tag")
    parser.add_argument("--concurrency", default="1,8,32", help="comma-separated concurrency levels")
    parser.add_argument("--requests", default="200,400,400",
                        help="measured requests per level: one number for all, or one per level")
    parser.add_argument("--warmup", type=int, default=20, help="unmeasured requests per level (at least 2 x C)")
    parser.add_argument("--max-seconds", type=float, default=120, help="time cap per level; a run always ends")
    parser.add_argument("--statements", type=int, default=256, help="distinct statements to cycle through")
    parser.add_argument("--data", type=Path, default=REPO / "data")
    parser.add_argument("--wait-quiet", type=float, default=0,
                        help="before each level, wait up to this many seconds for other jobs to go quiet")
    parser.add_argument("--naive", default="threaded", help="naive peers to run: threaded, serialized, both or none")
    parser.add_argument("--skip-service", action="store_true", help="measure only the naive peer(s)")
    # The service's knobs; unset means the service's own default (serving/settings.py).
    parser.add_argument("--threads", type=int, help="KAZSTANCE_THREADS (default: cores / workers)")
    parser.add_argument("--workers", type=int, default=1, help="KAZSTANCE_WORKERS")
    parser.add_argument("--max-batch-size", type=int, help="KAZSTANCE_MAX_BATCH_SIZE")
    parser.add_argument("--max-latency-ms", type=int, help="KAZSTANCE_MAX_LATENCY_MS")
    parser.add_argument("--backend", default="auto", help="KAZSTANCE_BACKEND (auto: the service's default)")
    parser.add_argument("--service", default="serving.service:KazStance",
                        help="the BentoML service to start; another import path only for experiments")
    parser.add_argument("--bentoml-options", help="BENTOML_CONFIG_OPTIONS for the service, for experiments, e.g. "
                        "'services.kazstance.traffic.timeout=300'")
    parser.add_argument("--max-length", type=int, default=128, help="the naive peer's truncation (the model's)")
    parser.add_argument("--bad-share", type=float, default=0.0,
                        help="mixed load: this share of the service's requests are bad (e.g. 0.05); see loadgen.py")
    parser.add_argument("--out", type=Path, default=HERE / "results" / "serve.json")
    args = parser.parse_args(argv)
    # A SIGTERM (a timeout, a killed job) unwinds like Ctrl-C, so the servers in `with` blocks are stopped.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    concurrency = [int(c) for c in args.concurrency.split(",")]
    requests = [int(n) for n in args.requests.split(",")]
    if len(requests) == 1:
        requests *= len(concurrency)
    if len(requests) != len(concurrency):
        parser.error("--requests needs one number, or one per concurrency level")
    levels = list(zip(concurrency, requests))
    peers = {"threaded": [False], "serialized": [True], "both": [False, True], "none": []}[args.naive]

    work = Path(tempfile.mkdtemp(prefix="kazstance-bench-serve-"))
    texts, source = pick_statements(args.data, args.statements)
    texts_file = work / "statements.txt"
    texts_file.write_text("\n".join(texts) + "\n", encoding="utf-8")
    words = [len(t.split()) for t in texts]
    print(f"{len(texts)} statements from {source}, {min(words)}-{max(words)} words; logs in {work}", flush=True)

    # A folder goes into a private store, so the benchmark never touches the user's models.
    bentoml_home = str(work / "bentoml") if Path(args.model).is_dir() else None
    tag, model_dir = resolve_model(args.model, bentoml_home)
    meta = json.loads((model_dir / "kazstance.json").read_text(encoding="utf-8"))
    results = {
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": {"tag": tag, "folder": str(model_dir), "base_model": meta.get("base_model"),
                  "data_fingerprint": meta.get("data_fingerprint"), "max_length": meta.get("max_length")},
        "machine": machine(),
        "workload": {"statements": len(texts), "source": source, "words": [min(words), max(words)],
                     "body": '{"texts": [one statement]}', "levels": {str(c): n for c, n in levels},
                     "warmup_per_level": f"max({args.warmup}, 2 x concurrency)", "max_seconds_per_level": args.max_seconds,
                     "latency": "client-side, send to parsed answer; throughput = ok answers / wall time",
                     "bad_share": args.bad_share},
        "services": {},
    }

    if not args.skip_service:  # the service's ceiling: the same predictor in-process, same texts, same backend
        results["raw_predictor"] = raw_predictor(model_dir, texts, args)
        print(f"raw predictor: {results['raw_predictor']['statements_per_s']} statements/s", flush=True)
        if args.backend == "auto":  # the service gets what auto chose here: its own choice, measured
            # while this process winds down, could differ between two backends within noise
            results["auto_chose"] = args.backend = results["raw_predictor"]["backend"]
    servers = [] if args.skip_service else [service_server(tag, args, work, bentoml_home)]
    servers += [naive_server(model_dir, serialize, args, work) for serialize in peers]
    try:
        for server, settings in servers:
            with server:
                settings["ready_after_s"] = round(server.wait_ready(timeout_s=600), 1)
                if server.name == "kazstance":  # the limits the running service reports, not what we meant
                    metadata = httpx.get(f"{server.url}/metadata", timeout=10).json()
                    settings["limits"], settings["backend_served"] = metadata["limits"], metadata["backend"]
                print(f"{server.name} ready in {settings['ready_after_s']} s", flush=True)
                results["services"][server.name] = {"settings": settings,
                                                    "runs": measure(server, texts_file, levels, args, work)}
    finally:
        if bentoml_home:  # the private store holds a copy of the weights (~0.5 GB); the logs stay
            shutil.rmtree(bentoml_home, ignore_errors=True)

    results["speedup_vs_naive_c32"] = speedup(results, "naive")
    runs = results["services"].get("kazstance", {}).get("runs", {})
    if "32" in runs and results.get("raw_predictor"):
        results["service_vs_raw_predictor_c32"] = round(runs["32"]["throughput_rps"]
                                                        / results["raw_predictor"]["statements_per_s"], 3)
    if "naive_serialized" in results["services"]:
        results["speedup_vs_naive_serialized_c32"] = speedup(results, "naive_serialized")
    if "kazstance" in results["services"]:
        results["targets"] = check_targets(results)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"\n{markdown_table(results)}\n\nspeedup_vs_naive_c32 = {results['speedup_vs_naive_c32']}"
          f"\ntargets: {results.get('targets', {}).get('met')}\nwrote {args.out}")
    return results


if __name__ == "__main__":
    main()
