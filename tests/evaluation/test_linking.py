"""Linking scores on a hand-built case (answers derived by hand in the comments), alternate
and composite ids, the unseen-surface subset, and the CLI on tiny Parquet files.

Spans are ``(doc_id, start, end)`` in characters, end exclusive.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jobs.evaluate import main
from pipeline.evaluation.linking import equivalent_ids, format_linking, gold_parts, score_linking
from pipeline.evaluation.scoring import score_spans
from pipeline.linking.dictionary import normalize_name

REPO = Path(__file__).resolve().parents[2]
GOLD_COLS = ["doc_id", "start", "end", "label", "concept_id", "text"]
PRED_COLS = ["doc_id", "start", "end", "label", "concept_id"]
LINK_COLS = ["doc_id", "start", "end", "rank", "concept_id"]

# g1..g8; g6 has no concept (-1). Right at 1 / at 5 (rank <= 5), with the alt id OMIM:1 = D7:
GOLD = [
    ("d1", 0, 5, "Disease", "D1", "Breast cancer"),  # pred D1: yes / links D1: yes
    ("d1", 10, 15, "Disease", "D2", "asthma"),  # pred D3: no / D2 at rank 3: yes
    ("d1", 20, 25, "Chemical", "C1", "aspirin"),  # pred C2: no / C1 only at rank 6: no
    ("d2", 0, 4, "Disease", "D5|D6", "X"),  # composite, pred D6: yes / yes
    ("d2", 6, 9, "Disease", "OMIM:1", "Y"),  # pred D7, an alternate: yes / yes
    ("d2", 10, 12, "Chemical", "-1", "V"),  # excluded, and so is its prediction
    ("d2", 20, 24, "Disease", "D8", "Z"),  # no entity, no links: no / no
    ("d2", 30, 33, "Chemical", "C3", "W"),  # entity without concept: no / C3 rank 1: yes
]
PRED = [
    ("d1", 0, 5, "Disease", "D1"),
    ("d1", 10, 15, "Disease", "D3"),
    ("d1", 20, 25, "Chemical", "C2"),
    ("d2", 0, 4, "Disease", "D6"),
    ("d2", 6, 9, "Disease", "D7"),
    ("d2", 10, 12, "Chemical", "C9"),
    ("d2", 30, 33, "Chemical", None),
    ("d1", 40, 45, "Disease", "D1"),  # no gold here
]
LINKS = [
    ("d1", 0, 5, 1, "D1"), ("d1", 0, 5, 2, "D2"),
    ("d1", 10, 15, 1, "D3"), ("d1", 10, 15, 2, "D4"), ("d1", 10, 15, 3, "D2"),
    *[("d1", 20, 25, r, f"C{r + 1}") for r in range(1, 6)], ("d1", 20, 25, 6, "C1"),
    ("d2", 0, 4, 1, "D6"), ("d2", 6, 9, 1, "D7"), ("d2", 30, 33, 1, "C3"),
]  # fmt: skip
ALTS = [("D7", "OMIM:1")]
DOCS = ["d1", "d2"]


def frame(rows: list[tuple], columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=columns)


def score(**kw: object) -> dict:
    args = {"links": frame(LINKS, LINK_COLS), "alt_ids": equivalent_ids(ALTS)} | kw
    return score_linking(frame(GOLD, GOLD_COLS), frame(PRED, PRED_COLS), DOCS, **args)


def test_accuracy_at_1_and_5_on_a_hand_built_case() -> None:
    s = score()
    # Scored: 7 (g6 excluded). Right at 1: g1, g4, g5; at 5: g1, g2, g4, g5, g8.
    o = s["overall"]
    assert (o["n"], o["n_correct_at_1"], o["n_correct_at_5"]) == (7, 3, 5)
    assert o["acc_at_1"] == pytest.approx(3 / 7) and o["acc_at_5"] == pytest.approx(5 / 7)
    d, c = s["per_label"]["Disease"], s["per_label"]["Chemical"]
    assert (d["n"], d["n_correct_at_1"], d["n_correct_at_5"]) == (5, 3, 4)
    assert (c["n"], c["n_correct_at_1"], c["n_correct_at_5"]) == (2, 0, 1)
    n = s["counts"]
    assert (n["n_gold"], n["n_scored"], n["n_excluded_no_concept"]) == (8, 7, 1)
    assert (n["n_composite"], n["n_unlinked_prediction"], n["links_max_rank"]) == (1, 1, 6)
    assert "acc@1" in format_linking(s) and "42.9%" in format_linking(s)  # 3/7


def test_missing_prediction_counts_as_wrong() -> None:
    s = score()
    # g7 has neither entity nor links: in n, wrong both ways, and counted.
    assert s["overall"]["n_no_prediction"] == 1 and s["counts"]["n_no_prediction"] == 1
    only_g7 = score_linking(frame(GOLD[6:7], GOLD_COLS), frame(PRED, PRED_COLS), DOCS,
                            links=frame(LINKS, LINK_COLS))  # fmt: skip
    assert only_g7["overall"] == {
        "n": 1, "n_correct_at_1": 0, "acc_at_1": 0.0, "n_correct_at_5": 0, "acc_at_5": 0.0,
        "n_no_prediction": 1,
    }  # fmt: skip


def test_without_links_acc_at_5_is_null() -> None:
    s = score(links=None)
    assert s["overall"]["acc_at_5"] is None and s["overall"]["n_correct_at_5"] is None
    assert s["overall"]["n_correct_at_1"] == 3
    assert s["counts"]["links_max_rank"] is None


def test_alternate_ids_count_either_way_round_but_are_not_chained() -> None:
    # Without the alt table g5 (gold OMIM:1, pred and link D7) is wrong at 1 and at 5.
    s = score(alt_ids=None)
    assert (s["overall"]["n_correct_at_1"], s["overall"]["n_correct_at_5"]) == (2, 4)
    eq = equivalent_ids([("C", "A1"), ("C", "A2"), ("X", "A"), ("Y", "A"), ("Z", None)])
    assert eq["A1"] == {"C", "A1", "A2"} and eq["C"] == eq["A2"] == eq["A1"]
    assert "Y" not in eq["X"] and eq["A"] == {"A", "X", "Y"}
    assert "Z" not in eq
    # Gold the primary id, prediction the alternate: right too.
    gold = frame([("d1", 0, 5, "Disease", "D7", "t")], GOLD_COLS)
    pred = frame([("d1", 0, 5, "Disease", "OMIM:1")], PRED_COLS)
    r = score_linking(gold, pred, DOCS, alt_ids=equivalent_ids(ALTS))
    assert r["overall"]["n_correct_at_1"] == 1


def test_composite_ids_match_any_part() -> None:
    assert gold_parts("D1|D2") == ["D1", "D2"] and gold_parts(" D1+D2 ") == ["D1", "D2"]
    gold = frame(
        [("d1", 0, 5, "Disease", "D1+D2", "t"), ("d1", 6, 9, "Disease", "D3|D4", "u"),
         ("d1", 10, 12, "Disease", "D5|D6", "v")], GOLD_COLS,
    )  # fmt: skip
    pred = frame(
        [("d1", 0, 5, "Disease", "D2"), ("d1", 6, 9, "Disease", "D3"),
         ("d1", 10, 12, "Disease", "D5|D6")], PRED_COLS,
    )  # fmt: skip
    r = score_linking(gold, pred, DOCS)
    # The third prediction is the composite string itself, not one of its parts: wrong.
    assert r["overall"]["n_correct_at_1"] == 2 and r["counts"]["n_composite"] == 3


def test_no_concept_and_null_gold_ids_are_excluded_and_counted() -> None:
    gold = frame(
        [("d1", 0, 5, "Chemical", "-1", "a"), ("d1", 6, 9, "Chemical", None, "b"),
         ("d1", 10, 12, "Chemical", "C1", "c"), ("d9", 0, 3, "Chemical", "C1", "d")], GOLD_COLS,
    )  # fmt: skip
    pred = frame(
        [("d1", 0, 5, "Chemical", "C7"), ("d1", 6, 9, "Chemical", "C8"),
         ("d1", 10, 12, "Chemical", "C1")], PRED_COLS,
    )  # fmt: skip
    r = score_linking(gold, pred, ["d1"])  # d9 is not scored
    c = r["counts"]
    assert (c["n_gold"], c["n_scored"]) == (3, 1)
    assert (c["n_excluded_no_concept"], c["n_excluded_null_id"], c["n_pred_excluded"]) == (1, 1, 2)
    assert r["overall"]["acc_at_1"] == 1.0
    # The predictions at excluded spans are neither false positives nor anything else.
    assert r["strict_with_concept"]["micro"] == {
        "tp": 1, "fp": 0, "fn": 0, "precision": 1.0, "recall": 1.0, "f1": 1.0,
    }  # fmt: skip


def test_unseen_surface_subset() -> None:
    train = {normalize_name(t) for t in ["breast-cancer", "Aspirin", "W"]}
    s = score(train_surfaces=train)
    # Seen (after normalising): g1 "Breast cancer", g3 "aspirin", g8 "W". Unseen: g2, g4,
    # g5, g7, all Disease: right at 1 g4, g5; at 5 g2, g4, g5.
    u = s["unseen_surface"]["overall"]
    assert (u["n"], u["n_correct_at_1"], u["n_correct_at_5"]) == (4, 2, 3)
    assert u["acc_at_1"] == 0.5 and u["acc_at_5"] == 0.75
    assert list(s["unseen_surface"]["per_label"]) == ["Disease"]
    assert s["counts"]["n_train_surfaces"] == 3
    assert score()["unseen_surface"] is None
    assert "unseen n" in format_linking(s) and "unseen n" not in format_linking(score())


def test_strict_with_concept_differs_from_span_scores_when_a_concept_is_wrong() -> None:
    s = score()["strict_with_concept"]
    # Left: 7 golds and 7 preds (g6 and its pred out). Right span, label and concept: g1,
    # g4, g5; so tp 3, fp 4, fn 4: P = R = F1 = 3/7.
    m = s["micro"]
    assert (m["tp"], m["fp"], m["fn"]) == (3, 4, 4) and m["f1"] == pytest.approx(3 / 7)
    d, c = s["per_label"]["Disease"], s["per_label"]["Chemical"]
    assert (d["tp"], d["fp"], d["fn"]) == (3, 2, 2)
    assert (c["tp"], c["fp"], c["fn"]) == (0, 2, 2)
    # Spans alone: every pred but the one at 40-45 has its gold span and label: 7 of 8.
    spans = score_spans(frame(GOLD, GOLD_COLS), frame(PRED, PRED_COLS), DOCS).strict.micro
    assert (spans.tp, spans.fp, spans.fn) == (7, 1, 1) and spans.f1 == pytest.approx(7 / 8)


def test_an_entity_of_the_gold_label_is_read_first() -> None:
    gold = frame([("d1", 0, 5, "Disease", "D1", "t")], GOLD_COLS)
    pred = frame([("d1", 0, 5, "Chemical", "C1"), ("d1", 0, 5, "Disease", "D1")], PRED_COLS)
    r = score_linking(gold, pred, DOCS)
    assert r["overall"]["n_correct_at_1"] == 1
    assert r["strict_with_concept"]["micro"]["fp"] == 1  # the Chemical one


# The CLI on tiny Parquet files.


def _write(path: Path, table: pa.Table) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)
    return path


def _inputs(tmp: Path) -> dict[str, Path]:
    pred = tmp / "run"
    ent = frame(PRED, PRED_COLS).assign(text="x", score=0.9)
    ent["concept_score"] = pa.array([0.5] * len(ent), pa.float32()).to_pandas()
    _write(pred / "entities" / "part-0.parquet", pa.Table.from_pandas(ent, preserve_index=False))
    links = frame(LINKS, LINK_COLS).assign(name="n", score=0.5)
    links["rank"] = links["rank"].astype("int32")
    _write(pred / "links" / "part-0.parquet", pa.Table.from_pandas(links, preserve_index=False))
    gold = _write(tmp / "gold.parquet", pa.Table.from_pandas(frame(GOLD, GOLD_COLS)))
    alts = pa.table({"concept_id": [a for a, _ in ALTS], "alt_id": [b for _, b in ALTS]})
    return {
        "pred": pred,
        "gold": gold,
        "alts": _write(tmp / "alts.parquet", alts),
        "train": _write(tmp / "train.parquet", pa.table({"text": ["breast-cancer", "W"]})),
    }


def test_cli_writes_the_linking_section(tmp_path: Path) -> None:
    f = _inputs(tmp_path)
    cmd = [sys.executable, "-m", "jobs.evaluate", "--pred", str(f["pred"]),
           "--gold-entities", str(f["gold"]), "--alt-ids", str(f["alts"]),
           "--train-entities", str(f["train"])]  # fmt: skip
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "acc@1" in res.stdout and "ALL (micro)" in res.stdout
    out = json.loads((f["pred"] / "eval.json").read_text())
    link = out["linking"]
    assert (link["overall"]["n_correct_at_1"], link["overall"]["n_correct_at_5"]) == (3, 5)
    assert link["unseen_surface"]["overall"]["n"] == 5  # g2, g3, g4, g5, g7
    assert link["strict_with_concept"]["micro"]["tp"] == 3
    assert out["inputs"]["alt_ids"] == [str(f["alts"])]
    assert out["strict"]["micro"]["tp"] == 7  # the span scores are as before


def test_no_concept_id_in_pred_means_no_linking_section(tmp_path: Path) -> None:
    f = _inputs(tmp_path)
    ent = pq.read_table(f["pred"] / "entities" / "part-0.parquet").drop(["concept_id"])
    pq.write_table(ent, f["pred"] / "entities" / "part-0.parquet")
    assert main(["--pred", str(f["pred"]), "--gold-entities", str(f["gold"])]) == 0
    out = json.loads((f["pred"] / "eval.json").read_text())
    assert "linking" not in out and "alt_ids" not in out["inputs"]
    assert out["strict"]["micro"]["tp"] == 7


@pytest.mark.parametrize(
    ("flag", "table", "column"),
    [
        ("--alt-ids", pa.table({"concept_id": ["D7"], "other": ["OMIM:1"]}), "alt_id"),
        ("--train-entities", pa.table({"mention": ["W"]}), "text"),
    ],
)
def test_a_bad_linking_input_names_file_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, table: pa.Table, column: str
) -> None:
    f = _inputs(tmp_path)
    bad = _write(tmp_path / "bad.parquet", table)
    rc = main(["--pred", str(f["pred"]), "--gold-entities", str(f["gold"]), flag, str(bad)])
    err = capsys.readouterr().err
    assert rc == 2
    assert str(bad) in err and repr(column) in err
    assert not (f["pred"] / "eval.json").exists()
