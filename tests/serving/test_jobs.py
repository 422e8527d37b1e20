"""Scoring jobs over HTTP (`serving/jobs.py`, `serving/job_routes.py`): against a real server with an
API key, an allowed folder and small limits, a job gives the batch scorer's output exactly; a job
survives a SIGKILL of its server; DELETE stops a job's scorer; bad requests get a 4xx in the
uniform shape. The pure parts (options, ids, the path allow-list, ETA, the store) are tested on
their own at the end."""

from __future__ import annotations

import io
import json
import os
import socket
import tarfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pyarrow.parquet as pq
import pytest
from bento_server import kill_hard, running_service
from score_data import TEXTS, encode

from serving import jobs
from serving.jobs import JobError, JobOptions, JobStore
from serving.score import score_files

KEY = "jobs-k3y"
AUTH = {"X-API-Key": KEY}
UPLOAD_LIMIT = 1_000_000
BATCH = 8  # the server's job batch size: a chunk (the unit of progress and resume) is 128 records


def server_env(jobs_dir: Path, allowed: Path | None = None) -> dict[str, str]:
    env = {"KAZSTANCE_API_KEY": KEY, "KAZSTANCE_JOBS_DIR": str(jobs_dir), "KAZSTANCE_BODY_TIMEOUT_S": "2",
           "KAZSTANCE_MAX_UPLOAD_BYTES": str(UPLOAD_LIMIT), "KAZSTANCE_JOBS_BATCH_SIZE": str(BATCH)}
    if allowed:
        env["KAZSTANCE_JOBS_ALLOW"] = str(allowed)
    return env


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    """An allowed folder holding a file, a link out of it, and a folder outside it."""
    root = tmp_path_factory.mktemp("jobs-files")
    allowed, outside = root / "allowed", root / "outside"
    allowed.mkdir()
    outside.mkdir()
    (allowed / "statements.jsonl").write_bytes(encode("jsonl", TEXTS))
    (outside / "secret.jsonl").write_bytes(encode("jsonl", TEXTS[:2]))
    (allowed / "escape.jsonl").symlink_to(outside / "secret.jsonl")
    (allowed / "sub").mkdir()
    (allowed / "sub" / "inner.jsonl").symlink_to(outside / "secret.jsonl")
    return {"root": root, "allowed": allowed, "outside": outside}


@pytest.fixture(scope="module")
def server(tiny_model_dir, bentoml_home, folders):
    jobs_dir = folders["root"] / "jobs"
    with running_service(tiny_model_dir, bentoml_home, "jobs", **server_env(jobs_dir, folders["allowed"])) as running:
        yield {**running, "jobs_dir": jobs_dir}


def submit(server, body=b"", params=None, headers=None, **kwargs) -> httpx.Response:
    return httpx.post(f"{server['url']}/jobs", content=body, params=params,
                      headers={**AUTH, **(headers or {})}, timeout=60, **kwargs)


def job(server, job_id: str) -> dict:
    r = httpx.get(f"{server['url']}/jobs/{job_id}", headers=AUTH, timeout=30)
    assert r.status_code == 200, r.text
    return r.json()


def wait_for(server, job_id: str, done=lambda s: s["status"] in ("done", "failed", "cancelled"),
             timeout: float = 180) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        state = job(server, job_id)
        if done(state):
            return state
        assert time.monotonic() < deadline, state
        time.sleep(0.1)


def download(server, job_id: str, to: Path) -> Path:
    r = httpx.get(f"{server['url']}/jobs/{job_id}/result", headers=AUTH, timeout=60)
    assert r.status_code == 200, r.text
    to.write_bytes(r.content)
    return to


def mixed_archive(path: Path) -> Path:
    """A .tar.gz with a JSONL (and one broken line), a CSV and a text file."""
    jsonl = "".join(json.dumps({"id": f"j{i}", "text": t, "outlet": f"o{i % 3}"}, ensure_ascii=False) + "\n"
                    for i, t in enumerate(TEXTS)).encode() + b"{broken\n"
    members = {"news/a.jsonl": jsonl, "news/b.csv": encode("csv", TEXTS[::-1]), "c.txt": encode("txt", TEXTS[:3])}
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def big_jsonl(path: Path, records: int = 3000) -> Path:
    path.write_bytes(encode("jsonl", [f"{TEXTS[i % len(TEXTS)]} ({i})" for i in range(records)]))
    return path


def scorer_run(tmp_path: Path, monkeypatch, name: str, output: str, tag: str, **options) -> Path:
    """The batch scorer on the same input, named as the job names it (relative, from its folder)."""
    monkeypatch.chdir(tmp_path)
    score_files([name], output, model=tag, batch_size=BATCH, threads=1, **options)
    return tmp_path / output


# ---------------------------------------------------------------------------------------------
# Against the server.


def test_an_uploaded_archive_gives_the_batch_scorers_output(server, tmp_path, monkeypatch):
    archive = mixed_archive(tmp_path / "mixed.tar.gz")
    r = submit(server, archive.read_bytes(), params=[("filename", "mixed.tar.gz"), ("format", "parquet"),
                                                     ("keep_text", "true"), ("keep_field", "outlet")],
               headers={"content-type": "application/gzip"})
    assert r.status_code == 202, r.text
    assert r.headers["location"] == f"/jobs/{r.json()['id']}" and r.json()["status"] == "queued"
    state = wait_for(server, r.json()["id"])
    assert state["status"] == "done", state
    got = download(server, state["id"], tmp_path / "got.parquet")

    expected = scorer_run(tmp_path, monkeypatch, "mixed.tar.gz", "expected.parquet", server["tag"],
                          keep_text=True, keep_fields=["outlet"])
    table = pq.read_table(got)
    assert table.equals(pq.read_table(expected))
    rows = table.to_pylist()
    assert len(rows) == 2 * len(TEXTS) + 3 + 1 and {r["model"] for r in rows} == {server["tag"]}
    assert rows[0]["source"] == "mixed.tar.gz:news/a.jsonl" and rows[0]["outlet"] == "o0"
    errors = [r for r in rows if r["error"]]
    assert len(errors) == 1 and errors[0]["record"] == len(TEXTS) + 1
    assert (state["rows_done"], state["errors"], state["eta_s"]) == (len(rows), 1, 0.0)
    assert state["input"] == {"filename": "mixed.tar.gz", "bytes": archive.stat().st_size}
    assert state["model"] == server["tag"] and state["options"]["keep_field"] == ["outlet"]


def test_a_multipart_upload_with_options_as_form_fields_gives_csv(server, tmp_path, monkeypatch):
    data = encode("jsonl", TEXTS)
    r = httpx.post(f"{server['url']}/jobs", headers=AUTH, timeout=60,
                   files={"file": ("Мои данные.jsonl", data, "application/octet-stream")},
                   data={"format": "csv", "unit": "sentence"})
    assert r.status_code == 202, r.text
    assert r.json()["input"]["filename"] == "__________.jsonl"  # only ASCII letters, digits and ._- are kept
    state = wait_for(server, r.json()["id"])
    assert state["status"] == "done", state
    got = download(server, state["id"], tmp_path / "got.csv")
    (tmp_path / "__________.jsonl").write_bytes(data)
    expected = scorer_run(tmp_path, monkeypatch, "__________.jsonl", "expected.csv", server["tag"], unit="sentence")
    assert got.read_bytes() == expected.read_bytes()


def test_a_server_side_path_under_an_allowed_folder_is_scored(server, folders):
    r = submit(server, json.dumps({"path": str(folders["allowed"] / "statements.jsonl"), "format": "jsonl",
                                   "keep_text": True}).encode(), headers={"content-type": "application/json"})
    assert r.status_code == 202, r.text
    job_id = r.json()["id"]
    early = httpx.get(f"{server['url']}/jobs/{job_id}/result", headers=AUTH, timeout=30)
    assert early.status_code == 409 and early.json()["status"] == 409  # not done yet
    assert "its result is here once it is done" in early.json()["error"]
    state = wait_for(server, job_id)
    assert state["status"] == "done" and state["rows_done"] == len(TEXTS)
    r = httpx.get(f"{server['url']}/jobs/{job_id}/result", headers=AUTH, timeout=30)
    assert r.headers["content-type"].startswith("application/x-ndjson")
    rows = [json.loads(line) for line in r.text.splitlines()]
    assert [row["text"] for row in rows] == TEXTS
    assert rows[0]["source"] == str(folders["allowed"] / "statements.jsonl")


def test_delete_cancels_a_running_job_and_stops_its_scorer(server, tmp_path):
    r = submit(server, big_jsonl(tmp_path / "big.jsonl", 6000).read_bytes(), params={"filename": "big.jsonl"})
    job_id = r.json()["id"]
    state = wait_for(server, job_id, lambda s: s["status"] != "queued")
    assert state["status"] == "running", state
    folder = server["jobs_dir"] / job_id
    pid = json.loads((folder / "job.json").read_text())["pid"]
    assert pid and not jobs.gone(pid)

    r = httpx.delete(f"{server['url']}/jobs/{job_id}", headers=AUTH, timeout=30)
    assert r.status_code == 200 and r.json()["status"] == "cancelled", r.text
    assert jobs.gone(pid)
    assert job(server, job_id)["status"] == "cancelled"
    assert not (folder / "input").exists() and not list(folder.glob("*output*"))
    r = httpx.get(f"{server['url']}/jobs/{job_id}/result", headers=AUTH, timeout=30)
    assert r.status_code == 409 and "cancelled" in r.json()["error"]
    # A finished job's DELETE removes it.
    assert httpx.delete(f"{server['url']}/jobs/{job_id}", headers=AUTH, timeout=30).json()["status"] == "deleted"
    assert httpx.get(f"{server['url']}/jobs/{job_id}", headers=AUTH, timeout=30).status_code == 404
    assert not folder.exists()


def test_a_slow_upload_is_taken_and_a_stalled_one_cut_off(server):
    # Four chunks a second apart: longer than the body timeout (2 s) in all, never idle that long.
    data = encode("jsonl", TEXTS)

    def slowly():
        for i in range(4):
            yield data[i * len(data) // 4:(i + 1) * len(data) // 4]
            time.sleep(1)

    r = submit(server, slowly(), params={"filename": "slow.jsonl"})
    assert r.status_code == 202, r.text
    assert r.json()["input"]["bytes"] == len(data)
    httpx.delete(f"{server['url']}/jobs/{r.json()['id']}", headers=AUTH, timeout=30)

    address = urlparse(server["url"])
    with socket.create_connection((address.hostname, address.port), timeout=15) as conn:
        conn.sendall(b"POST /jobs?filename=a.jsonl HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode() +
                     b"\r\nContent-Length: 1000\r\n\r\n" + data[:100])
        began = time.perf_counter()
        answer = b""
        while b'"status": 408}' not in answer and (more := conn.recv(4096)):
            answer += more
        assert answer.startswith(b"HTTP/1.1 408"), answer
        assert time.perf_counter() - began < 10


def bad_requests(folders) -> list:
    allowed = folders["allowed"]
    unknown = "0" * 32
    jsonl = encode("jsonl", TEXTS[:1])
    return [
        ("POST", "/jobs?filename=a.jsonl", b"", {}, 400, "empty upload"),
        ("POST", "/jobs?filename=a.jsonl&format=xlsx", jsonl, {}, 400, "format 'xlsx'"),
        ("POST", "/jobs?filename=a.jsonl&unit=paragraph", jsonl, {}, 400, "unit 'paragraph'"),
        ("POST", "/jobs?filename=a.jsonl&colour=red", jsonl, {}, 400, "unknown option 'colour'"),
        ("POST", "/jobs?filename=a.jsonl&keep_text=maybe", jsonl, {}, 400, "keep_text"),
        ("POST", "/jobs?filename=a.jsonl&keep_field=label", jsonl, {}, 400, "keep_field label"),
        ("POST", "/jobs?filename=a.jsonl&format=csv&format=csv", jsonl, {}, 400, "given twice"),
        ("POST", "/jobs", jsonl, {}, 400, "name the upload"),
        ("POST", "/jobs?filename=run.exe", jsonl, {}, 415, "the scorer reads"),
        ("POST", "/jobs", b"", {"content-type": "multipart/form-data; boundary=xyz"}, 400, "multipart"),
        ("POST", "/jobs?filename=a.jsonl", b"x" * (UPLOAD_LIMIT + 1), {}, 413, "upload over"),
        ("POST", "/jobs?path=/etc/passwd", b"", {}, 403, "outside the folders"),
        ("POST", f"/jobs?path={folders['outside']}/secret.jsonl", b"", {}, 403, "outside the folders"),
        ("POST", f"/jobs?path={allowed}/../outside/secret.jsonl", b"", {}, 403, "outside the folders"),
        ("POST", f"/jobs?path={allowed}/escape.jsonl", b"", {}, 403, "symbolic link"),
        ("POST", f"/jobs?path={allowed}/sub", b"", {}, 403, "holds inner.jsonl"),
        ("POST", f"/jobs?path={allowed}/missing.jsonl", b"", {}, 404, "no such file"),
        ("POST", "/jobs?path=statements.jsonl", b"", {}, 400, "absolute path"),
        ("POST", f"/jobs?path={allowed}/statements.jsonl", jsonl, {}, 400, "not both"),
        ("POST", "/jobs", b'{"path": "/etc/passwd"}', {"content-type": "application/json"}, 403, "outside"),
        ("POST", "/jobs", b'{"path": ', {"content-type": "application/json"}, 400, "not valid JSON"),
        ("POST", "/jobs", b'{"format": "csv"}', {"content-type": "application/json"}, 400, "server-side file"),
        ("GET", f"/jobs/{unknown}", b"", {}, 404, "no job"),
        ("GET", f"/jobs/{unknown}/result", b"", {}, 404, "no job"),
        ("DELETE", f"/jobs/{unknown}", b"", {}, 404, "no job"),
        ("GET", "/jobs/not-a-job-id", b"", {}, 400, "malformed job id"),
        ("GET", "/jobs/..%2F..%2Fjob.json", b"", {}, None, ""),  # 400 or 404: never a file
        ("DELETE", "/jobs/" + "A" * 32, b"", {}, 400, "malformed job id"),
        ("GET", "/jobs", b"", {}, 405, ""),
    ]


def test_bad_requests_get_a_4xx_in_the_uniform_shape_and_leave_nothing(server, folders):
    before = sorted(p.name for p in server["jobs_dir"].iterdir())
    with httpx.Client(base_url=server["url"], timeout=30) as client:
        for method, url, body, headers, status, message in bad_requests(folders):
            r = client.request(method, url, content=body, headers={**AUTH, **headers})
            where = f"{method} {url}: {r.status_code} {r.text[:300]}"
            assert 400 <= r.status_code < 500 and (status is None or r.status_code == status), where
            assert r.json() == {"error": r.json()["error"], "status": r.status_code}, where
            assert message in r.json()["error"], where
        for method, url in [("POST", "/jobs?filename=a.jsonl"), ("GET", f"/jobs/{'0' * 32}")]:
            r = client.request(method, url, content=b"{}" if method == "POST" else None)
            assert r.status_code == 401 and r.json()["status"] == 401
    assert sorted(p.name for p in server["jobs_dir"].iterdir()) == before


def test_a_job_survives_a_sigkill_of_its_server_and_resumes_exactly(tiny_model_dir, bentoml_home, tmp_path,
                                                                       monkeypatch, server):
    jobs_dir = tmp_path / "jobs"
    data = big_jsonl(tmp_path / "big.jsonl", 5000)
    with running_service(tiny_model_dir, bentoml_home, "jobs-kill", tag=server["tag"],
                         **server_env(jobs_dir)) as first:
        r = submit(first, data.read_bytes(), params={"filename": "big.jsonl", "format": "jsonl", "keep_text": "1"})
        job_id = r.json()["id"]
        state = wait_for(first, job_id, lambda s: s["rows_done"] > 0 or s["status"] in jobs.FINAL)
        assert state["status"] == "running", "the job ended before the kill: make it bigger"
        assert state["eta_s"] is None or state["eta_s"] >= 0
        pid = json.loads((jobs_dir / job_id / "job.json").read_text())["pid"]
        kill_hard(first["proc"], spare=(pid,))
        deadline = time.monotonic() + 10
        while not jobs.gone(pid):  # the scorer dies with the server that started it
            assert time.monotonic() < deadline, "the job's scorer outlived its server"
            time.sleep(0.05)

    with running_service(tiny_model_dir, bentoml_home, "jobs-kill", tag=server["tag"],
                         **server_env(jobs_dir)) as second:
        state = wait_for(second, job_id)
        assert state["status"] == "done", state
        got = download(second, job_id, tmp_path / "got.jsonl")
    assert json.loads((jobs_dir / job_id / "job.json").read_text())["runs"] == 2
    assert "resumed after" in (jobs_dir / job_id / "scorer.log").read_text()

    expected = scorer_run(tmp_path, monkeypatch, "big.jsonl", "expected.jsonl", server["tag"], keep_text=True)
    assert got.read_bytes() == expected.read_bytes()
    assert state["rows_done"] == 5000 and state["errors"] == 0


# ---------------------------------------------------------------------------------------------
# The pure parts.


def test_options_parse_with_defaults_and_refuse_what_the_scorer_would_not_take():
    assert JobOptions.parse([]) == JobOptions(format="jsonl", unit="statement", text_field="text", id_field="id",
                                              keep_text=False, keep_field=())
    parsed = JobOptions.parse([("format", "csv"), ("keep_text", True), ("keep_field", ["a", "b"]),
                               ("keep_field", "a"), ("text_field", "body.text")])
    assert (parsed.format, parsed.keep_text, parsed.keep_field, parsed.text_field) == ("csv", True, ("a", "b"), "body.text")
    for bad in ([("format", "xlsx")], [("keep_text", "2")], [("text_field", "")], [("id_field", "a\nb")],
                [("keep_field", "score_x")], [("unit", "statement"), ("unit", "sentence")], [("model", "x")],
                [("keep_field", [f"f{i}" for i in range(40)])], [("text_field", 3)]):
        with pytest.raises(JobError) as raised:
            JobOptions.parse(bad)
        assert raised.value.status == 400, bad


def test_job_ids_are_checked_before_they_name_a_folder(tmp_path):
    store = JobStore(tmp_path)
    job_id, folder = store.reserve()
    assert jobs.check_id(job_id) == job_id and folder == tmp_path / job_id
    for bad in ("../..", "..", "", job_id.upper(), job_id + "0", job_id[:-1] + "/", None, 42):
        with pytest.raises(JobError) as raised:
            store.folder(bad)
        assert raised.value.status == 400
    with pytest.raises(JobError) as raised:
        store.read("f" * 32)
    assert raised.value.status == 404


def test_upload_names_are_made_safe_and_must_be_readable():
    assert jobs.upload_name("../../etc/data.tar.gz") == "data.tar.gz"
    assert jobs.upload_name("C:\\Users\\me\\export 2023.jsonl") == "export_2023.jsonl"
    assert jobs.upload_name(".hidden.csv") == "hidden.csv"
    assert jobs.upload_name("--output=x.csv") == "output_x.csv"
    for bad, status in ((None, 400), ("", 400), ("...", 400), ("a.exe", 415), ("a.gz", 415)):
        with pytest.raises(JobError) as raised:
            jobs.upload_name(bad)
        assert raised.value.status == status, bad


def test_the_allow_list_resolves_links_and_refuses_whatever_leads_out(tmp_path):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "deep").mkdir(parents=True)
    outside.mkdir()
    (allowed / "deep" / "a.jsonl").write_text("{}\n")
    (outside / "b.jsonl").write_text("{}\n")
    (allowed / "out.jsonl").symlink_to(outside / "b.jsonl")
    (allowed / "in.jsonl").symlink_to(allowed / "deep" / "a.jsonl")
    (tmp_path / "via").symlink_to(allowed)  # an allowed folder configured through a link

    def status(raw, roots=(allowed,)):
        try:
            jobs.allowed_path(raw, list(roots))
        except JobError as err:
            return err.status
        return 200

    assert status(str(allowed / "deep" / "a.jsonl")) == 200
    assert status(str(allowed / "in.jsonl")) == 200
    assert status(str(allowed / "deep")) == 200
    assert status(str(tmp_path / "via" / "deep" / "a.jsonl"), roots=(tmp_path / "via",)) == 200
    assert jobs.allowed_path(str(allowed / "in.jsonl"), [allowed]) == allowed / "deep" / "a.jsonl"
    assert status(str(allowed / "out.jsonl")) == 403
    assert status(str(allowed)) == 403  # holds out.jsonl
    assert status(str(outside / "b.jsonl")) == 403
    assert status(str(outside / "missing.jsonl")) == 403  # outside: whether it exists is not said
    assert status(str(allowed / "deep" / ".." / ".." / "outside" / "b.jsonl")) == 403
    assert status(str(allowed / "missing.jsonl")) == 404
    assert status("deep/a.jsonl") == 400
    assert status(str(allowed / "deep" / "a.jsonl"), roots=()) == 403
    (allowed / "deep" / "a.bin").write_text("x")
    assert status(str(allowed / "deep" / "a.bin")) == 415


def test_eta_comes_from_this_runs_byte_rate_and_is_unknown_until_then():
    progress = {"bytes_done": 100, "bytes_total": 1000, "run_start_bytes": 0, "run_started_at": 10.0,
                "updated_at": 20.0, "finished": False}
    assert jobs.eta_seconds(progress, now=20.0) == 90.0  # 10 bytes/s, 900 left
    assert jobs.eta_seconds(progress, now=30.0) == 80.0
    assert jobs.eta_seconds({**progress, "run_start_bytes": 100}, now=20.0) is None  # a resumed run, no chunk yet
    assert jobs.eta_seconds({**progress, "bytes_total": None}, now=20.0) is None
    assert jobs.eta_seconds({**progress, "finished": True}, now=20.0) == 0.0
    assert jobs.eta_seconds(None, now=20.0) is None


def test_the_store_writes_state_under_its_lock_and_cancel_keeps_the_state(tmp_path):
    store = JobStore(tmp_path)
    job_id, folder = store.reserve()
    (folder / "input" / "a.jsonl").write_text("{}\n")
    assert store.jobs() == []  # an upload still coming in is no job yet
    store.create(job_id, source={"kind": "upload", "name": "a.jsonl", "bytes": 3}, options=JobOptions(),
                 model="kazstance:x", backend="torch")
    with store.locked(job_id) as state:
        state["status"] = "running"
    assert store.read(job_id)["status"] == "running" and [s["id"] for s in store.jobs()] == [job_id]
    assert jobs.cancel(store, job_id) is None
    store.discard_files(job_id)
    assert store.read(job_id)["status"] == "cancelled" and not (folder / "input").exists()
    with pytest.raises(JobError) as raised:
        jobs.cancel(store, job_id)
    assert raised.value.status == 409
    view = jobs.public_view(store.read(job_id), None)
    assert view["status"] == "cancelled" and view["input"] == {"filename": "a.jsonl", "bytes": 3} and "pid" not in view


def test_the_scorer_command_cannot_be_steered_by_option_values(tmp_path):
    store = JobStore(tmp_path)
    job_id, _ = store.reserve()
    state = store.create(job_id, source={"kind": "upload", "name": "a.jsonl", "bytes": 3},
                         options=JobOptions(text_field="--model=/tmp/evil", keep_field=("--resume",)),
                         model="kazstance:x", backend="torch")
    cmd = jobs.scorer_command(store, state, batch_size=8, threads=1)
    assert "--text-field=--model=/tmp/evil" in cmd and "--keep-field=--resume" in cmd
    assert cmd[-2:] == ["--", "a.jsonl"] and "--model=kazstance:x" in cmd


def test_the_runner_runs_jobs_in_order_at_most_n_at_once_and_resumes_running_ones(tmp_path, monkeypatch):
    import sys

    store = JobStore(tmp_path)
    ids = []
    for _ in range(3):
        job_id, _ = store.reserve()
        store.create(job_id, source={"kind": "upload", "name": "a.jsonl", "bytes": 3}, options=JobOptions(),
                     model="kazstance:x", backend="torch")
        ids.append(job_id)
    with store.locked(ids[2]) as state:  # left running by a server that was killed
        state.update(status="running", pid=2**22 + 7, runs=1)
    # A stand-in scorer: writes the output after a moment, and says which job it was, in order.
    monkeypatch.setattr(jobs, "scorer_command", lambda store, state, batch_size, threads: [
        sys.executable, "-c", f"import time, pathlib; time.sleep(0.3); "
                              f"pathlib.Path({str(store.output(state))!r}).write_text('x'); "
                              f"open({str(tmp_path / 'order')!r}, 'a').write({state['id']!r} + '\\n')"])
    runner = jobs.JobRunner(store, max_running=1)
    most = 0
    deadline = time.monotonic() + 60
    while any(store.read(i)["status"] != "done" for i in ids):
        runner.woken.set()
        runner.tick()
        most = max(most, sum(store.read(i)["status"] == "running" for i in ids))
        assert time.monotonic() < deadline, [store.read(i) for i in ids]
        time.sleep(0.05)
    assert most == 1
    assert (tmp_path / "order").read_text().split() == ids  # creation order; the resumed job keeps its place
    assert [store.read(i)["runs"] for i in ids] == [1, 1, 2]
    second = jobs.JobRunner(store)
    assert not second._take_over()  # one runner per jobs folder
    asyncio_run_stop(runner)
    assert second._take_over()
    asyncio_run_stop(second)


def asyncio_run_stop(runner) -> None:
    import asyncio

    asyncio.run(runner.stop())


def test_a_failed_scorer_fails_its_job_with_the_scorers_message(tmp_path, monkeypatch):
    import sys

    store = JobStore(tmp_path)
    job_id, _ = store.reserve()
    store.create(job_id, source={"kind": "upload", "name": "a.jsonl", "bytes": 3}, options=JobOptions(),
                 model="kazstance:x", backend="torch")
    monkeypatch.setattr(jobs, "scorer_command", lambda *a, **k: [
        sys.executable, "-c", "import sys; print('loading...'); print('error: cannot load model'); sys.exit(2)"])
    runner = jobs.JobRunner(store)
    deadline = time.monotonic() + 30
    while store.read(job_id)["status"] in ("queued", "running"):
        runner.woken.set()
        runner.tick()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    state = store.read(job_id)
    assert state["status"] == "failed" and state["error"] == "scorer failed (exit code 2): error: cannot load model"
    asyncio_run_stop(runner)


def test_uploads_to_jobs_are_exempt_from_bentomls_request_timeout_and_nothing_else():
    import asyncio
    import inspect

    from bentoml._internal.server import base_app
    from bentoml._internal.server.http import traffic

    from serving.job_routes import exempt_uploads_from_request_timeout

    # BentoML must still build its middleware from the module attribute this replaces.
    assert "from .http.traffic import TimeoutMiddleware" in inspect.getsource(base_app)
    exempt_uploads_from_request_timeout()

    async def slow_app(scope, receive, send):
        await asyncio.sleep(0.3)
        await send({"type": "http.response.start", "status": 202, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def status(method: str, path: str) -> int:
        sent = []

        async def send(message):
            sent.append(message)

        async def receive():
            return {"type": "http.request", "body": b""}

        await traffic.TimeoutMiddleware(slow_app, timeout=0.1)({"type": "http", "method": method, "path": path},
                                                                receive, send)
        return sent[0]["status"]

    assert asyncio.run(status("POST", "/jobs")) == 202
    assert asyncio.run(status("GET", "/jobs")) == 504
    assert asyncio.run(status("POST", "/predict")) == 504


def test_kazstance_serve_hands_the_jobs_folders_to_the_service(monkeypatch, tmp_path):
    from typer.testing import CliRunner

    from kazstance.cli import app
    from serving import launch

    for name in ("KAZSTANCE_MODEL", "KAZSTANCE_BACKEND", "KAZSTANCE_WORKERS", "KAZSTANCE_JOBS_DIR", "KAZSTANCE_JOBS_ALLOW"):
        monkeypatch.setenv(name, "")  # restored after the test, whatever serve sets
    monkeypatch.delenv("KAZSTANCE_API_KEY", raising=False)
    monkeypatch.setattr(launch, "resolve_tag", lambda model: "kazstance:x")
    monkeypatch.setattr(launch.os, "execv", lambda *args: None)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["serve", "--jobs-dir", "jobs", "--jobs-allow", "a", "--jobs-allow", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert os.environ["KAZSTANCE_JOBS_DIR"] == str(tmp_path / "jobs")
    assert os.environ["KAZSTANCE_JOBS_ALLOW"] == f"{tmp_path / 'a'}:{tmp_path / 'b'}"
    from serving import settings

    assert settings.jobs_allow() == [tmp_path / "a", tmp_path / "b"]
    assert settings.jobs_dir() == tmp_path / "jobs"


def test_the_scorer_writes_its_progress_file_after_every_chunk(tmp_path, tiny_model_dir, monkeypatch):
    import serving.score as score
    from score_data import tiny_predictor

    progress, seen = tmp_path / "progress.json", []
    write = score._ProgressFile.write

    def write_and_look(self, counts, bytes_done, finished=False):
        write(self, counts, bytes_done, finished)
        seen.append(json.loads(progress.read_text()))

    monkeypatch.setattr(score._ProgressFile, "write", write_and_look)
    data = big_jsonl(tmp_path / "in.jsonl", 40)
    score_files([data], tmp_path / "out.jsonl", predictor=tiny_predictor(tiny_model_dir), batch_size=1,
                progress_file=progress)  # a chunk is 16 records
    assert [s["rows_written"] for s in seen] == [0, 16, 32, 40, 40]
    assert [s["finished"] for s in seen] == [False] * 4 + [True]
    assert seen[-1]["bytes_done"] == seen[-1]["bytes_total"] == data.stat().st_size
    assert all(0 <= s["bytes_done"] <= s["bytes_total"] for s in seen) and not (tmp_path / "progress.json.tmp").exists()
