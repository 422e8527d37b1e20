"""`kazstance data import`: a labelled batch comes back in, checked against the label contract,
all or nothing, and the dataset still passes `kazstance data check` afterwards.

Every test works on a dataset built in tmp_path (`--data-root`), never on the real data/.
"""

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from training.data_check import check
from training.label_import import LabelImportError, import_labels
from training.selection import select, write_batch
from training.sources import url_hash

runner = CliRunner()

EXISTING = [
    {"id": "hw-1", "text": "TikTok-ты бұғаттау керек, балаларға зияны көп.", "label": "support", "lang": "kk",
     "platform": "tiktok", "source": "handwritten:test"},
    {"id": "hw-2", "text": "Запрет ничего не решит, все уйдут в VPN.", "label": "oppose", "lang": "ru",
     "platform": "general", "source": "handwritten:test"},
]
EXISTING_TEST = [
    {"id": "hw-3", "text": "Законопроект о регистрации платформ рассмотрят в Мажилисе в июне этого года.",
     "label": "neutral", "lang": "ru", "platform": "general", "source": "handwritten:test",
     "source_url": "https://example.kz/news/1"},
]
NEW = [  # (id, text, label, borderline)
    ("n1", "Мектептерде телефонға тыйым салу балалардың сабаққа зейінін арттырады дейді мұғалімдер.", "support", ""),
    ("n2", "Блогеры опасаются, что блокировка оставит их без заработка.", "oppose", "x"),
    ("n3", "Министрлік платформалармен келіссөздер жалғасып жатқанын хабарлады.", "neutral", ""),
]


def write_jsonl(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def data_root(tmp_path) -> Path:
    root = tmp_path / "data"
    write_jsonl(root / "train.jsonl", EXISTING)
    write_jsonl(root / "test.jsonl", EXISTING_TEST)
    assert check([root]).problems == []
    return root


def batch_csv(path: Path, rows, extra_columns=()) -> Path:
    """A batch as `select` writes it, filled in by an annotator."""
    columns = ["id", "text", "model_label", "score_support", "score_oppose", "score_neutral", "uncertainty", "source",
               *extra_columns, "lang", "platform", "label", "borderline"]
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        for r in rows:
            base = {"model_label": "neutral", "score_support": 0.3, "score_oppose": 0.3, "score_neutral": 0.4,
                    "uncertainty": 0.99, "source": "archive.zip:a.jsonl", "lang": "kk", "platform": "tiktok"}
            writer.writerow({**base, **r})
    return path


def new_rows(**changes):
    rows = [{"id": i, "text": t, "label": label, "borderline": b} for i, t, label, b in NEW]
    for index, change in changes.items():
        rows[int(index[1:])].update(change)
    return rows


def read_jsonl(path: Path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def run_import(batch: Path, data_root: Path, *args):
    return runner.invoke(app, ["data", "import", str(batch), "--into", str(data_root / "user"),
                               "--data-root", str(data_root), *args])


# ---------------------------------------------------------------------------------------------
# The round trip.


def test_csv_batch_becomes_records_that_pass_data_check(tmp_path, data_root):
    rows = new_rows()
    rows[1]["lang"] = "ru"
    batch = batch_csv(tmp_path / "batch-01.csv", rows + [{"id": "n4", "text": "Әлі ешкім белгілемеген сөйлем.",
                                                          "label": "", "borderline": ""}],
                      extra_columns=("outlet", "date", "source_url"))
    result = run_import(batch, data_root)
    assert result.exit_code == 0, result.output
    assert "1 unlabelled" in result.output

    records = read_jsonl(data_root / "user" / "batch-01.jsonl")
    assert [r["id"] for r in records] == ["n1", "n2", "n3"]
    first = records[0]
    assert {k: first[k] for k in ("label", "lang", "platform", "source", "clarity", "split", "origin")} == {
        "label": "support", "lang": "kk", "platform": "tiktok", "source": "import:batch-01", "clarity": "clear",
        "split": "train", "origin": "archive.zip:a.jsonl"}
    assert records[1]["clarity"] == "borderline" and records[1]["lang"] == "ru"
    assert "outlet" not in first  # empty cells are not carried as empty fields
    report = check([data_root])
    assert report.problems == []
    assert len(report.records) == len(EXISTING) + len(EXISTING_TEST) + 3
    check_cli = runner.invoke(app, ["data", "check", str(data_root), "--no-cues"])
    assert check_cli.exit_code == 0, check_cli.output


def test_select_then_import_round_trip(tmp_path, data_root):
    """What `select` writes, filled in, is what `import` reads: ids, texts (formula escape undone) and metadata."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [t for _, t, _, _ in NEW] + ["=Бұғаттау — шешім емес, дейді заңгер."]
    scored = [{"source": "news.parquet", "record": i, "id": f"s{i}", "text": t, "label": "neutral",
               "score_support": 0.3, "score_oppose": 0.3, "score_neutral": 0.4, "tokens": 9, "windows": 1,
               "model": "kazstance:1", "error": None, "outlet": "kaz.example.kz", "date": "2026-01-05"}
              for i, t in enumerate(texts)]
    pq.write_table(pa.Table.from_pylist(scored), tmp_path / "scores.parquet")
    batch = write_batch(select([tmp_path / "scores.parquet"], n=10, strategy="diverse"), tmp_path / "b.csv")[0]
    with batch.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r.update(label="oppose", lang="kk", platform="general")
    with batch.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)

    result = import_labels(batch, data_root / "user", data_root=data_root)
    assert result.written == 4 and result.labels["oppose"] == 4
    records = {r["id"]: r for r in read_jsonl(result.output)}
    assert records["s3"]["text"] == texts[3]  # the `'` select put before `=` is gone
    assert records["s0"]["outlet"] == "kaz.example.kz" and records["s0"]["date"] == "2026-01-05"
    assert check([data_root]).problems == []


def label_studio_task(task_id, text, *annotations, **data):
    return {"id": task_id, "data": {"id": f"ls-{task_id}", "text": text, "source": "archive.jsonl",
                                    "lang": "kk", "platform": "telegram", **data},
            "annotations": list(annotations),
            "predictions": [{"result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                         "value": {"choices": ["neutral"]}}]}]}


def annotation(label=None, borderline=False, cancelled=False, **choices):
    result = []
    if label:
        result.append({"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}})
    if borderline:
        result.append({"from_name": "borderline", "to_name": "text", "type": "choices",
                       "value": {"choices": ["borderline"]}})
    for name, value in choices.items():
        result.append({"from_name": name, "to_name": "text", "type": "choices", "value": {"choices": [value]}})
    return {"id": 1, "result": result, "was_cancelled": cancelled}


def test_label_studio_export_becomes_records(tmp_path, data_root):
    tasks = [
        label_studio_task(1, NEW[0][1], annotation("support")),
        label_studio_task(2, NEW[1][1], annotation("oppose", borderline=True), lang="ru"),
        label_studio_task(3, NEW[2][1], annotation("support", cancelled=True)),   # skipped: unlabelled
        label_studio_task(4, "Жаңа ереже келесі айда күшіне енеді деп хабарлады министрлік.",
                          annotation("neutral", lang="kk-ru", platform="general")),  # choices override data
        label_studio_task(5, "Ешкім белгілемеген тапсырма мәтіні осында тұр."),          # no annotation
    ]
    export = tmp_path / "project-1-export.json"
    export.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    result = run_import(export, data_root, "--source", "ls-batch")
    assert result.exit_code == 0, result.output
    records = {r["id"]: r for r in read_jsonl(data_root / "user" / "ls-batch.jsonl")}
    assert set(records) == {"ls-1", "ls-2", "ls-4"}
    assert records["ls-1"]["label"] == "support" and records["ls-1"]["clarity"] == "clear"
    assert records["ls-2"]["clarity"] == "borderline" and records["ls-2"]["lang"] == "ru"
    assert (records["ls-4"]["lang"], records["ls-4"]["platform"]) == ("kk-ru", "general")
    assert records["ls-4"]["source"] == "import:ls-batch"
    assert check([data_root]).problems == []


def test_label_studio_control_may_have_another_name(tmp_path, data_root):
    ann = {"result": [{"from_name": "stance", "type": "choices", "value": {"choices": ["Oppose"]}}]}
    export = tmp_path / "export.json"
    export.write_text(json.dumps([label_studio_task(1, NEW[1][1], ann)], ensure_ascii=False), encoding="utf-8")
    assert read_jsonl(import_labels(export, data_root / "user", data_root=data_root).output)[0]["label"] == "oppose"


# ---------------------------------------------------------------------------------------------
# Every rule: a clear error naming file and row, exit code 1, nothing written.


@pytest.mark.parametrize("changes, row, reason", [
    ({"r0": {"label": "pro"}}, 1, "label 'pro' is not one of support, oppose, neutral"),
    ({"r1": {"lang": "en"}}, 2, "lang 'en' is not one of kk, kk-latn, ru, kk-ru"),
    ({"r1": {"lang": ""}}, 2, "no language: fill the lang column or pass --lang"),
    ({"r2": {"platform": "myspace"}}, 3, "platform 'myspace' is not one of"),
    ({"r2": {"platform": ""}}, 3, "no platform"),
    ({"r0": {"text": "   "}}, 1, "empty text"),
    ({"r0": {"id": ""}}, 1, "empty id"),
    ({"r2": {"id": "n1"}}, 3, "id 'n1' repeats"),
    ({"r1": {"id": "hw-1"}}, 2, "id 'hw-1' already used at"),
    ({"r0": {"text": EXISTING[0]["text"].upper()}}, 1, "same text as"),
    ({"r2": {"text": NEW[0][1]}}, 3, "same text as"),
    ({"r1": {"borderline": "maybe"}}, 2, "borderline 'maybe'"),
    ({"r0": {"text": EXISTING_TEST[0]["text"].replace("года", "г.")}}, 1, "in split 'test' (a leak)"),
])
def test_each_rule_fails_the_import_with_file_and_row(tmp_path, data_root, changes, row, reason):
    batch = batch_csv(tmp_path / "batch.csv", new_rows(**changes))
    result = run_import(batch, data_root)
    assert result.exit_code == 1
    assert f"{batch}:{row}: " in result.output and reason in " ".join(result.output.split())
    assert "nothing written" in result.output
    assert not (data_root / "user").exists()


def test_problems_are_all_listed_and_nothing_is_written(tmp_path, data_root):
    batch = batch_csv(tmp_path / "batch.csv", new_rows(r0={"label": "pro"}, r2={"lang": "en"}))
    with pytest.raises(LabelImportError) as err:
        import_labels(batch, data_root / "user", data_root=data_root)
    assert [p.split(": ", 1)[0] for p in err.value.problems] == [f"{batch}:1", f"{batch}:3"]
    assert not (data_root / "user" / "batch.jsonl").exists()


def test_heldout_page_is_refused(tmp_path, data_root):
    listed = tmp_path / "heldout.sha256"
    listed.write_text(url_hash("https://news.example.kz/held-out") + "\n", encoding="utf-8")
    rows = new_rows(r0={"source_url": "http://www.news.example.kz/held-out/"})
    batch = batch_csv(tmp_path / "batch.csv", rows, extra_columns=("source_url",))
    with pytest.raises(LabelImportError) as err:
        import_labels(batch, data_root / "user", data_root=data_root, heldout_files=[listed])
    assert any("held out for evaluation" in p for p in err.value.problems)


def test_a_page_stays_in_its_split(tmp_path, data_root):
    batch = batch_csv(tmp_path / "batch.csv", new_rows(r1={"source_url": "https://example.kz/news/1"}),
                      extra_columns=("source_url",))
    with pytest.raises(LabelImportError) as err:
        import_labels(batch, data_root / "user", data_root=data_root)
    assert any("already feeds split 'test'" in p for p in err.value.problems)
    assert import_labels(batch, data_root / "user", data_root=data_root, split="test").written == 3
    assert check([data_root]).problems == []


def test_label_studio_annotators_who_disagree_stop_the_import(tmp_path, data_root):
    export = tmp_path / "export.json"
    export.write_text(json.dumps([label_studio_task(1, NEW[0][1], annotation("support"), annotation("oppose"))],
                                 ensure_ascii=False), encoding="utf-8")
    result = run_import(export, data_root)
    assert result.exit_code == 1 and "annotations disagree (oppose vs support)" in result.output


def test_near_duplicate_in_the_same_split_is_only_a_warning(tmp_path, data_root):
    text = EXISTING[0]["text"].replace("көп.", "көп!")
    result = run_import(batch_csv(tmp_path / "batch.csv", new_rows(r0={"text": text})), data_root)
    assert result.exit_code == 0, result.output
    assert "warning" in result.output and "near duplicate" in result.output
    assert check([data_root]).problems == []


def test_unlabelled_batch_imports_nothing(tmp_path, data_root):
    rows = [{**r, "label": ""} for r in new_rows()]
    result = run_import(batch_csv(tmp_path / "batch.csv", rows), data_root)
    assert result.exit_code == 1 and "none of its 3 rows is labelled" in result.output


# ---------------------------------------------------------------------------------------------
# Options.


def test_existing_file_needs_append_and_reimport_collides(tmp_path, data_root):
    first = batch_csv(tmp_path / "first.csv", new_rows()[:2])
    assert run_import(first, data_root, "--source", "mine").exit_code == 0
    second = batch_csv(tmp_path / "second.csv", new_rows()[2:])
    refused = run_import(second, data_root, "--source", "mine")
    assert refused.exit_code == 1 and "--append" in refused.output
    assert run_import(second, data_root, "--source", "mine", "--append").exit_code == 0
    assert [r["id"] for r in read_jsonl(data_root / "user" / "mine.jsonl")] == ["n1", "n2", "n3"]
    again = run_import(first, data_root, "--source", "mine", "--append")  # the same batch twice
    assert again.exit_code == 1 and "already used at" in again.output
    assert check([data_root]).problems == []


def test_lang_and_platform_fill_rows_without_them(tmp_path, data_root):
    rows = new_rows(r0={"lang": "", "platform": ""}, r1={"lang": "", "platform": ""})
    result = run_import(batch_csv(tmp_path / "batch.csv", rows), data_root, "--lang", "ru", "--platform", "youtube")
    assert result.exit_code == 0, result.output
    records = read_jsonl(data_root / "user" / "batch.jsonl")
    assert [(r["lang"], r["platform"]) for r in records] == [("ru", "youtube"), ("ru", "youtube"), ("kk", "tiktok")]


def test_id_prefix_avoids_collisions(tmp_path, data_root):
    batch = batch_csv(tmp_path / "batch.csv", new_rows(r0={"id": "hw-1"}))
    assert run_import(batch, data_root).exit_code == 1
    assert run_import(batch, data_root, "--id-prefix", "jan-").exit_code == 0
    assert [r["id"] for r in read_jsonl(data_root / "user" / "batch.jsonl")] == ["jan-hw-1", "jan-n2", "jan-n3"]


@pytest.mark.parametrize("args, message", [(["--lang", "en"], "--lang 'en'"), (["--split", "dev"], "split 'dev'"),
                                           (["--source", "../escape"], "source name")])
def test_bad_options_are_refused(tmp_path, data_root, args, message):
    result = run_import(batch_csv(tmp_path / "batch.csv", new_rows()), data_root, *args)
    assert result.exit_code == 1 and message in result.output


def test_unknown_file_type_is_refused(tmp_path, data_root):
    path = tmp_path / "batch.xlsx"
    path.write_bytes(b"PK")
    result = run_import(path, data_root)
    assert result.exit_code == 1 and "Label Studio" in result.output
