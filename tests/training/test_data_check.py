"""`kazstance data check`: each rule catches its violation and names file, line and rule."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from training.data_check import check, near_duplicates

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
    assert len(report.records) >= 2400
