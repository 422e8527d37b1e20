"""`kazstance data check`: each rule catches its violation and names file, line and rule."""

import json
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from training.data_check import agreement, check, cue_report, near_duplicates
from training.sources import url_hash

REPO = Path(__file__).resolve().parents[2]


def record(i, text, label="support", lang="kk", **extra):
    return {"id": f"r{i}", "text": text, "label": label, "lang": lang, "platform": "tiktok", "source": "test", **extra}


def write(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def good_rows():
    return [record(1, "TikTok-ты бұғаттау керек, балаларға зиян."),
            record(2, "Бұғаттау ешкімді қорғамайды.", "oppose"),
            record(3, "Мәселе келесі аптада талқыланады.", "neutral", "kk"),
            record(4, "Запрет ничего не решит.", "oppose", "ru")]


def test_clean_dataset_passes(tmp_path):
    write(tmp_path / "train.jsonl", good_rows())
    assert check([tmp_path]).problems == []


@pytest.mark.parametrize("rows, rule, line", [
    ([record(1, "Жақсы сөйлем."), {"id": "r2", "text": "Жоқ өріс", "label": "oppose", "lang": "kk", "source": "t"}], "schema", 2),
    ([record(1, "Бірінші сөйлем.", label="pro")], "label", 1),
    ([record(1, "Бірінші сөйлем.", lang="en")], "lang", 1),
    ([record(1, "Бірінші сөйлем."), record(1, "Екінші сөйлем.")], "unique-id", 2),
    ([record(1, "Бірінші  сөйлем."), record(2, "бірінші сөйлем.")], "duplicate", 2),
    ([record(1, "   ")], "schema", 1),
])
def test_each_rule_reports_file_line_and_rule(tmp_path, rows, rule, line):
    path = write(tmp_path / "train.jsonl", rows)
    problems = check([tmp_path]).problems
    assert any(p.startswith(f"{path}:{line}: [{rule}]") for p in problems), problems


def test_near_duplicate_across_splits_is_a_leak(tmp_path):
    text = "Мәжіліс депутаты TikTok желісін балалар үшін шектеуді ұсынды, себебі зияны көп."
    train_path = write(tmp_path / "train.jsonl", [record(1, text)])
    test_path = write(tmp_path / "test.jsonl", [record(2, text.replace("көп.", "көп!"))])
    problems = check([tmp_path]).problems
    assert len(problems) == 1 and "[leak]" in problems[0], problems
    assert f"{train_path}:1" in problems[0] and f"{test_path}:1" in problems[0]


def test_unknown_split_name_is_reported(tmp_path):
    path = write(tmp_path / "misc.jsonl", [record(1, "Бір сөйлем.")])
    assert any(p.startswith(f"{path}:1: [split]") for p in check([tmp_path]).problems)


def test_near_duplicates_finds_only_close_pairs():
    texts = ["TikTok-ты жабу керек деп ойлаймын", "TikTok-ты жабу керек деп ойлаймын!", "Мүлде басқа сөйлем мұнда"]
    assert [(i, j) for i, j, _ in near_duplicates(texts, 0.8)] == [(0, 1)]


def test_cli_exit_codes(tmp_path):
    write(tmp_path / "train.jsonl", good_rows())
    assert CliRunner().invoke(app, ["data", "check", str(tmp_path)]).exit_code == 0
    write(tmp_path / "test.jsonl", [record(9, "x", label="maybe")])
    result = CliRunner().invoke(app, ["data", "check", str(tmp_path)])
    assert result.exit_code == 1 and "[label]" in result.output


def test_the_project_dataset_passes():
    report = check([REPO / "data"])
    assert report.problems == []
    assert len(report.records) >= 5000
    assert report.heldout_refused == 0


NEWS_FIELDS = ("id", "text", "label", "lang", "platform", "source_url", "outlet", "date", "context", "register",
               "source", "clarity")


def news_rows(split):
    return [json.loads(line) for line in (REPO / "data" / "news" / f"{split}.jsonl").read_text(encoding="utf-8").splitlines()]


def test_news_records_carry_their_source_and_meet_the_mix():
    rows = [r for split in ("train", "validation", "test") for r in news_rows(split)]
    assert len(rows) >= 2500
    for r in rows:
        assert all(field in r for field in NEWS_FIELDS), r["id"]
        assert r["register"] == "news" and r["source"] == "news-restated" and r["source_url"].startswith("http")
    share = lambda key, value: sum(r[key] == value for r in rows) / len(rows)  # noqa: E731
    assert share("lang", "kk") >= 0.55 and share("lang", "ru") >= 0.30
    assert 0.30 <= share("label", "neutral") <= 0.50
    assert share("label", "support") >= 0.20 and share("label", "oppose") >= 0.20
    outlets = Counter(r["outlet"] for r in rows)
    assert len({r["source_url"] for r in rows}) >= 150 and len(outlets) >= 40
    assert outlets.most_common(1)[0][1] / len(rows) <= 0.10


def test_the_news_test_split_holds_outlets_that_train_never_saw():
    from training.sources import outlet_family

    train_families = {outlet_family(r["outlet"]) for r in news_rows("train") + news_rows("validation")}
    test = news_rows("test")
    unseen = {outlet_family(r["outlet"]) for r in test} - train_families
    assert len(test) >= 500 and len(unseen) >= 25
    assert all(outlet_family(r["outlet"]) in unseen for r in test)


def test_second_annotation_agreement_is_reported():
    agree = agreement(check([REPO / "data" / "news"]))
    assert agree["n"] >= 400 and agree["kappa"] > 0.6


def news(i, text, url, label="neutral", **extra):
    return record(i, text, label, source_url=url, outlet=url.split("/")[2], **extra)


def test_statements_from_heldout_pages_are_refused(tmp_path):
    heldout = tmp_path / "heldout.sha256"
    heldout.write_text("# list\n" + url_hash("https://www.secret.kz/news/7") + "\n")
    data = tmp_path / "data"
    data.mkdir()
    path = write(data / "train.jsonl", [news(1, "Сенат заңды қарады.", "https://open.kz/a"),
                                         news(2, "Министр жауап берді.", "https://secret.kz/news/7/?utm=x")])
    report = check([data], heldout_files=[heldout])
    assert report.heldout_refused == 1
    assert [p for p in report.problems if "[heldout]" in p] == [
        f"{path}:2: [heldout] source_url https://secret.kz/news/7/?utm=x is a page held out for evaluation; drop this statement"]
    result = CliRunner().invoke(app, ["data", "check", str(data), "--heldout", str(heldout), "--no-cues"])
    assert result.exit_code == 1 and "1 statement(s) refused" in result.output


def test_one_page_feeds_one_split(tmp_path):
    train_path = write(tmp_path / "train.jsonl", [news(1, "Депутат шектеу енгізуді сұрады.", "https://a.kz/1", "support")])
    test_path = write(tmp_path / "test.jsonl", [news(2, "Компания таңқалғанын айтты.", "https://a.kz/1/", "oppose")])
    problems = check([tmp_path]).problems
    assert len(problems) == 1 and "[source-leak] page https://a.kz/1" in problems[0]
    assert f"{train_path}:1" in problems[0] and f"{test_path}:1" in problems[0]


def test_clarity_and_second_label_values_are_checked(tmp_path):
    path = write(tmp_path / "train.jsonl", [record(1, "Бір.", clarity="unsure"), record(2, "Екі.", label_2="pro")])
    problems = check([tmp_path]).problems
    assert any(p.startswith(f"{path}:1: [clarity]") for p in problems)
    assert any(p.startswith(f"{path}:2: [label_2]") for p in problems)


def test_agreement_compares_the_first_annotation_with_the_second(tmp_path):
    # label_1 is the first annotator's label, kept when adjudication changed `label`.
    rows = [record(1, "a", "support", label_2="support"), record(2, "b", "oppose", label_2="oppose"),
            record(3, "c", "neutral", label_2="neutral"), record(4, "d", "neutral", label_1="support", label_2="neutral"),
            record(5, "e", "support")]
    write(tmp_path / "train.jsonl", rows)
    agree = agreement(check([tmp_path]))
    # first: s o n s ; second: s o n n -> p_o = 3/4, p_e = (2*1 + 1*1 + 1*2)/16 = 5/16, kappa = (12/16-5/16)/(11/16)
    assert agree["n"] == 4 and agree["agreement"] == 0.75
    assert agree["kappa"] == pytest.approx(7 / 11)


def test_cue_report_scores_the_baseline_on_each_held_out_split(tmp_path):
    words = {"support": "тыйым салу керек", "oppose": "бұғаттау пайдасыз", "neutral": "отырыс сейсенбіде өтеді"}
    train = [record(i, f"{words[y]} {i}", y) for i, y in enumerate(list(words) * 10)]
    test = [record(100 + i, f"{words[y]} тағы {i}", y) for i, y in enumerate(words)]
    write(tmp_path / "train.jsonl", train)
    write(tmp_path / "test.jsonl", test)
    rows = cue_report(check([tmp_path]))
    assert [(r["split"], r["n"]) for r in rows] == [("test", 3)]
    assert rows[0]["macro_f1"] == 1.0  # keywords alone solve this split: the report says so


def test_a_file_named_twice_is_read_once(tmp_path):
    from training.data_check import data_files

    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "batch.jsonl").write_text("", encoding="utf-8")
    assert data_files([tmp_path, tmp_path / "user", tmp_path / "user" / "batch.jsonl"]) == [tmp_path / "user" / "batch.jsonl"]
