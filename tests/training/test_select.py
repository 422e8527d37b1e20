"""`kazstance select`: which scored statements go to annotators, in which order, in which files.

Scored files are built by hand (the scorer's columns, scores chosen per test): no model runs.
"""

import csv
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from kazstance.cli import app
from training.selection import (POOL_FACTOR, Candidate, SelectionError, bounded_pool, fair_cap, select,
                                write_batch)

runner = CliRunner()

# Distinct statements (no two are near duplicates), to fill scored files.
TEXTS = [f"{i:03d} {word}" for i, word in enumerate([
    "TikTok-ты бұғаттау керек, балаларға зияны көп.", "Бұғаттау ешкімді қорғамайды, бәрі VPN арқылы кіреді.",
    "Министр бұл мәселенің әлі талқыланатынын айтты.", "Запрет TikTok ничего не решит, молодежь уйдет в VPN.",
    "Депутат Үкіметтен әлеуметтік желілерге шектеу енгізуді сұрады.", "Вопрос о блокировке будет рассмотрен на заседании.",
    "Мектепте телефонға тыйым салу дұрыс шешім.", "Законопроект рассмотрят в Мажилисе в июне.",
    "Жоба 16 жасқа дейін тіркелуге тыйым салады.", "Компания жас пайдаланушылардың қауіпсіздігіне мән береді.",
    "Запрет ударит по тысячам предпринимателей.", "Балаларымызды қорғау үшін жас шектеуін енгізу керек.",
    "Роскомнадзор замедлил работу YouTube в регионах.", "Ата-аналар ойындарға шектеу қоюды сұрап отыр.",
    "Telegram открыл представительство в Астане.", "Блогерлер табыссыз қалады деп алаңдайды.",
    "Сенатор предложил штрафовать платформы.", "Интернетті өшіру экономикаға зиян келтіреді.",
    "Meta ответила на требования регулятора.", "Мұғалімдер сабақта телефонға тыйым салуды қолдайды.",
    "Юристы сомневаются в законности блокировки.", "WhatsApp арқылы алаяқтық көбейді, дейді полиция.",
    "Эксперты назвали запрет соцсетей для детей популистским.", "Әкімдік жаңа ережені талқылауға шақырды.",
])]


def scores(support, oppose, neutral):
    return {"score_support": support, "score_oppose": oppose, "score_neutral": neutral}


def row(i, text=None, label="neutral", source="archive.jsonl", error=None, s=(0.2, 0.2, 0.6), **extra):
    return {"source": source, "record": i, "id": f"r{i}", "text": TEXTS[i] if text is None else text, "label": label,
            **scores(*s), "tokens": 12, "windows": 1, "model": "kazstance:test", "error": error, **extra}


def write_parquet(path: Path, rows) -> Path:
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def ids(selection):
    return [c.id for c in selection.picked]


# ---------------------------------------------------------------------------------------------
# Strategies: the order each one ranks constructed scores in.


def test_uncertainty_ranks_by_entropy(tmp_path):
    path = write_parquet(tmp_path / "s.parquet", [
        row(0, s=(0.9, 0.05, 0.05)),     # confident
        row(1, s=(0.34, 0.33, 0.33)),    # almost uniform: most uncertain
        row(2, s=(0.5, 0.3, 0.2)),
        row(3, s=(0.6, 0.3, 0.1)),
    ])
    assert ids(select([path], n=4, strategy="uncertainty")) == ["r1", "r2", "r3", "r0"]


def test_margin_ranks_by_the_gap_between_the_top_two(tmp_path):
    # r0 is torn between two labels (gap 0) but sure it is not the third: low entropy, smallest margin.
    path = write_jsonl(tmp_path / "s.jsonl", [
        row(0, s=(0.5, 0.5, 0.0)),
        row(1, s=(0.4, 0.35, 0.25)),     # gap 0.05, highest entropy
        row(2, s=(0.7, 0.2, 0.1)),       # gap 0.5
    ])
    assert ids(select([path], n=3, strategy="margin")) == ["r0", "r1", "r2"]
    # By entropy r0 comes last: ln 2 against 0.80 for (0.7, 0.2, 0.1).
    assert ids(select([path], n=3, strategy="uncertainty")) == ["r1", "r2", "r0"]


def test_uncertainty_column_is_normalised_entropy(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [row(0, s=(1 / 3, 1 / 3, 1 / 3)), row(1, s=(1.0, 0.0, 0.0))])
    picked = {c.id: c.uncertainty for c in select([path], n=2, strategy="uncertainty").picked}
    assert picked["r0"] == pytest.approx(1.0) and picked["r1"] == pytest.approx(0.0)


def test_diverse_takes_turns_over_outlets(tmp_path):
    # 10 statements from a.kz, 2 from b.kz, 1 from c.kz: three picks are one from each.
    rows = [row(i, outlet="a.kz") for i in range(10)] + [row(10, outlet="b.kz"), row(11, outlet="b.kz"),
                                                         row(12, outlet="c.kz")]
    selection = select([write_parquet(tmp_path / "s.parquet", rows)], n=3, strategy="diverse")
    assert sorted(c.extra["outlet"] for c in selection.picked) == ["a.kz", "b.kz", "c.kz"]


def test_diverse_groups_by_scored_file_without_outlets(tmp_path):
    rows = [row(i, source="big.zip:a.jsonl") for i in range(10)] + [row(10, source="small.csv")]
    selection = select([write_jsonl(tmp_path / "s.jsonl", rows)], n=2, strategy="diverse")
    assert sorted(c.source for c in selection.picked) == ["big.zip:a.jsonl", "small.csv"]


def test_diverse_spreads_over_months_within_a_source(tmp_path):
    rows = [row(i, date="2026-01-0%d" % (1 + i % 9)) for i in range(8)] + [row(8, date="2026-02-11"),
                                                                          row(9, date="2026-03-12")]
    selection = select([write_jsonl(tmp_path / "s.jsonl", rows)], n=3, strategy="diverse")
    assert sorted(c.period for c in selection.picked) == ["2026-01", "2026-02", "2026-03"]


def test_diverse_depends_on_the_seed_and_only_on_it(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [row(i) for i in range(len(TEXTS))])
    first = ids(select([path], n=5, strategy="diverse", seed=13))
    assert ids(select([path], n=5, strategy="diverse", seed=13)) == first
    assert ids(select([path], n=5, strategy="diverse", seed=14)) != first


def test_ties_are_broken_the_same_way_every_run(tmp_path):
    path = write_jsonl(tmp_path / "s.jsonl", [row(i, s=(0.4, 0.3, 0.3)) for i in range(12)])
    assert ids(select([path], n=5, strategy="uncertainty")) == ids(select([path], n=5, strategy="uncertainty"))


# ---------------------------------------------------------------------------------------------
# The default: entropy, no near duplicates, fair share per source and month.


def test_default_skips_near_duplicates_of_a_picked_statement(tmp_path):
    base = "Депутаттар TikTok желісін балаларды қорғау үшін бұғаттауды ұсынып отыр деп хабарлады агенттік."
    path = write_jsonl(tmp_path / "s.jsonl", [
        row(0, text=base, s=(0.34, 0.33, 0.33)),
        row(1, text=base.replace("агенттік", "агенттігі"), s=(0.35, 0.33, 0.32)),  # reworded copy: Jaccard >= 0.8
        row(2, text=base.upper(), s=(0.36, 0.32, 0.32)),                           # same text once normalised
        row(3, s=(0.5, 0.3, 0.2)),
    ])
    selection = select([path], n=2)
    assert ids(selection) == ["r0", "r3"]
    assert selection.duplicates_skipped == 2


@pytest.mark.parametrize("strategy", ["uncertainty", "margin", "diverse"])
def test_every_strategy_skips_duplicates(tmp_path, strategy):
    path = write_jsonl(tmp_path / "s.jsonl", [row(0, text="Бірдей мәтін, бірдей сөз."),
                                              row(1, text="бірдей  мәтін, бірдей сөз."), row(2)])
    assert len(select([path], n=3, strategy=strategy).picked) == 2


def test_default_caps_each_source_at_its_fair_share(tmp_path):
    # a.kz has the 6 most uncertain statements, b.kz 6 less uncertain ones: 4 picks are 2 + 2.
    rows = [row(i, outlet="a.kz", s=(0.34, 0.33, 0.33)) for i in range(6)]
    rows += [row(i, outlet="b.kz", s=(0.5, 0.3, 0.2)) for i in range(6, 12)]
    path = write_parquet(tmp_path / "s.parquet", rows)
    picked = select([path], n=4).picked
    assert sorted(c.extra["outlet"] for c in picked) == ["a.kz", "a.kz", "b.kz", "b.kz"]
    # Without the cap, uncertainty alone takes a.kz only.
    assert {c.extra["outlet"] for c in select([path], n=4, strategy="uncertainty").picked} == {"a.kz"}


def test_a_small_group_leaves_its_share_to_the_others(tmp_path):
    rows = [row(i, outlet="a.kz", s=(0.34, 0.33, 0.33)) for i in range(10)] + [row(10, outlet="b.kz")]
    outlets = [c.extra["outlet"] for c in select([write_jsonl(tmp_path / "s.jsonl", rows)], n=4).picked]
    assert sorted(outlets) == ["a.kz", "a.kz", "a.kz", "b.kz"]


def test_default_caps_each_month(tmp_path):
    rows = [row(i, date="2026-01-15", s=(0.34, 0.33, 0.33)) for i in range(6)]
    rows += [row(i, date="2026-02-15", s=(0.6, 0.3, 0.1)) for i in range(6, 12)]
    picked = select([write_jsonl(tmp_path / "s.jsonl", rows)], n=4).picked
    assert sorted(c.period for c in picked) == ["2026-01", "2026-01", "2026-02", "2026-02"]


def test_batch_is_topped_up_when_caps_and_duplicates_leave_it_short(tmp_path):
    # b.kz's share is 2, but its second statement duplicates its first: a.kz fills the place.
    rows = [row(i, outlet="a.kz", s=(0.34, 0.33, 0.33)) for i in range(4)]
    rows += [row(4, outlet="b.kz", text="Бір мәтін, екі рет жазылған."),
             row(5, outlet="b.kz", text="бір мәтін, екі рет жазылған.")]
    picked = select([write_jsonl(tmp_path / "s.jsonl", rows)], n=4).picked
    assert len(picked) == 4
    assert sorted(c.extra["outlet"] for c in picked) == ["a.kz", "a.kz", "a.kz", "b.kz"]


@pytest.mark.parametrize("sizes, n, cap", [([100, 100, 5], 60, 28), ([10], 4, 4), ([3, 3], 4, 2), ([1, 1], 5, 5)])
def test_fair_cap_is_the_smallest_cap_that_fills_the_batch(sizes, n, cap):
    assert fair_cap(sizes, n) == cap


def test_pool_keeps_only_the_best_candidates():
    def cand(i, p):
        return Candidate(id=str(i), text=str(i), source="s", model_label="neutral",
                         scores={"support": p, "oppose": (1 - p) / 2, "neutral": (1 - p) / 2}, model="m",
                         extra={}, tiebreak=i / 100)

    pool = bounded_pool((cand(i, 0.9 - i / 100) for i in range(50)), 5, "uncertainty")
    assert [c.id for c in pool] == ["49", "48", "47", "46", "45"]  # the least confident five, best first
    assert POOL_FACTOR >= 2


# ---------------------------------------------------------------------------------------------
# Reading scored files.


def test_error_rows_are_skipped_and_files_pooled(tmp_path):
    a = write_parquet(tmp_path / "a.parquet", [row(0), row(1, error="scoring failed: X", s=(None, None, None))])
    b = write_jsonl(tmp_path / "b.jsonl", [row(2), row(3, text=None, error="empty text")])
    c = tmp_path / "c.csv"
    with c.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(row(4)))
        writer.writeheader()
        writer.writerow({**row(4), "error": ""})  # the scorer writes a null error as an empty cell
    selection = select([a, b, c], n=10)
    assert sorted(ids(selection)) == ["r0", "r2", "r4"]
    assert (selection.rows_read, selection.error_rows) == (5, 2)


def test_scored_without_text_is_refused(tmp_path):
    rows = [{k: v for k, v in row(0).items() if k != "text"}]
    with pytest.raises(SelectionError, match="--keep-text"):
        select([write_parquet(tmp_path / "s.parquet", rows)], n=1)


def test_files_from_models_with_other_labels_are_refused(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [row(0)])
    other = {k: v for k, v in row(1).items() if k != "score_neutral"}
    b = write_jsonl(tmp_path / "b.jsonl", [other])
    with pytest.raises(SelectionError, match="one model's output"):
        select([a, b], n=2)


def test_sentence_rows_get_distinct_ids(tmp_path):
    rows = [row(0, sentence=1), row(1, sentence=2)]
    for r in rows:
        r["id"] = "doc-7"
    assert sorted(ids(select([write_jsonl(tmp_path / "s.jsonl", rows)], n=2))) == ["doc-7:1", "doc-7:2"]


# ---------------------------------------------------------------------------------------------
# The batch files.


def read_csv(path):
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def test_csv_batch_columns_and_carried_metadata(tmp_path):
    rows = [row(0, outlet="a.kz", date="2026-01-02", lang="kk", s=(0.5, 0.3, 0.2)),
            row(1, outlet="b.kz", date="2026-02-03", lang="ru", text="=HYPERLINK(\"http://x\") запрет", label="support")]
    selection = select([write_parquet(tmp_path / "s.parquet", rows)], n=2)
    out = write_batch(selection, tmp_path / "batch.csv")[0]
    with out.open(encoding="utf-8") as f:
        header = next(csv.reader(f))
    assert header == ["id", "text", "model_label", "score_support", "score_oppose", "score_neutral", "uncertainty",
                      "source", "outlet", "date", "lang", "platform", "label", "borderline"]
    batch = {r["id"]: r for r in read_csv(out)}
    assert batch["r0"]["outlet"] == "a.kz" and batch["r0"]["lang"] == "kk"
    assert batch["r0"]["label"] == batch["r0"]["borderline"] == batch["r0"]["platform"] == ""
    assert batch["r1"]["model_label"] == "support"
    assert batch["r1"]["text"].startswith("'=HYPERLINK")  # a spreadsheet shows it, does not run it


def test_label_studio_tasks_and_config(tmp_path):
    selection = select([write_jsonl(tmp_path / "s.jsonl", [row(0, label="oppose", s=(0.2, 0.7, 0.1), platform="tiktok"),
                                                           row(1)])], n=2)
    tasks_path, config_path = write_batch(selection, tmp_path / "batch.json", "label-studio")
    assert config_path == tmp_path / "batch.config.xml"
    tasks = json.loads(tasks_path.read_text(encoding="utf-8"))
    task = next(t for t in tasks if t["data"]["id"] == "r0")
    assert task["data"]["text"] == TEXTS[0] and task["data"]["platform"] == "tiktok"
    assert task["data"]["source"] == "archive.jsonl" and "label" not in task["data"]
    prediction = task["predictions"][0]
    assert prediction["model_version"] == "kazstance:test" and prediction["score"] == pytest.approx(0.7)
    assert prediction["result"] == [{"from_name": "label", "to_name": "text", "type": "choices",
                                     "value": {"choices": ["oppose"]}}]

    view = ET.fromstring(config_path.read_text(encoding="utf-8"))
    controls = {c.get("name"): [x.get("value") for x in c] for c in view.iter("Choices")}
    assert controls["label"] == ["support", "oppose", "neutral"]
    assert controls["borderline"] == ["borderline"]
    assert "lang" in controls and "platform" not in controls  # asked only where the batch lacks it
    assert view.find("Text").get("value") == "$text"


# ---------------------------------------------------------------------------------------------
# The command.


def test_select_command_writes_the_batch(tmp_path):
    scored = write_parquet(tmp_path / "s.parquet", [row(i) for i in range(6)])
    out = tmp_path / "batch.csv"
    result = runner.invoke(app, ["select", str(scored), "--n", "3", "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert len(read_csv(out)) == 3
    again = runner.invoke(app, ["select", str(scored), "--n", "3", "--out", str(out)])
    assert again.exit_code == 2 and "--force" in again.output  # never overwrites labels by accident
    forced = runner.invoke(app, ["select", str(scored), "--n", "2", "--out", str(out), "--force",
                                 "--strategy", "margin", "--format", "label-studio"])
    assert forced.exit_code == 0, forced.output
    assert len(json.loads(out.read_text(encoding="utf-8"))) == 2 and (tmp_path / "batch.config.xml").is_file()


@pytest.mark.parametrize("args, message", [(["--strategy", "random"], "strategy"), (["--format", "xlsx"], "--format")])
def test_select_command_rejects_unknown_choices(tmp_path, args, message):
    scored = write_jsonl(tmp_path / "s.jsonl", [row(0)])
    result = runner.invoke(app, ["select", str(scored), "--out", str(tmp_path / "b.csv"), *args])
    assert result.exit_code == 2 and message in result.output


def test_select_command_without_text_column_fails_cleanly(tmp_path):
    scored = write_jsonl(tmp_path / "s.jsonl", [{k: v for k, v in row(0).items() if k != "text"}])
    result = runner.invoke(app, ["select", str(scored), "--out", str(tmp_path / "b.csv")])
    assert result.exit_code == 2 and "--keep-text" in result.output
    assert not (tmp_path / "b.csv").exists()
