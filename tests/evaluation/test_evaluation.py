"""Entity scoring on hand-built spans (answers derived by hand), the CLI, and real gold data.

Spans are ``(doc_id, start, end, label)`` in characters, end exclusive.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.evaluation.output import evaluate
from pipeline.evaluation.scoring import Counts, EvalReport, score_spans
from pipeline.schemas import document_schema, entity_schema

REPO = Path(__file__).resolve().parents[2]
DATA = Path(__file__).resolve().parents[3] / "shared" / "data"

Span = tuple[str, int, int, str]


def spans(rows: list[Span]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["doc_id", "start", "end", "label"])


def score(gold: list[Span], pred: list[Span], docs: list[str] | None = None) -> EvalReport:
    doc_ids = docs if docs is not None else sorted({r[0] for r in gold + pred})
    return score_spans(spans(gold), spans(pred), doc_ids)


def counts(c: Counts) -> tuple[int, int, int]:
    return (c.tp, c.fp, c.fn)


def test_exact_match() -> None:
    gold = [("d1", 0, 5, "Disease"), ("d1", 10, 20, "Disease")]
    r = score(gold, list(gold))
    # Both spans found exactly: tp 2, nothing extra, nothing missed.
    assert counts(r.strict.micro) == (2, 0, 0)
    assert counts(r.lenient.micro) == (2, 0, 0)
    assert (r.strict.micro.precision, r.strict.micro.recall, r.strict.micro.f1) == (1.0, 1.0, 1.0)


def test_off_by_one_boundary_is_strict_miss_lenient_hit() -> None:
    # [1,5) vs [0,5): 4 shared characters but a different start.
    r = score([("d1", 0, 5, "Disease")], [("d1", 1, 5, "Disease")])
    assert counts(r.strict.micro) == (0, 1, 1)
    assert counts(r.lenient.micro) == (1, 0, 0)


def test_touching_spans_do_not_overlap() -> None:
    # [5,9) starts where [0,5) ends: no shared character, since ends are exclusive.
    r = score([("d1", 0, 5, "Disease")], [("d1", 5, 9, "Disease")])
    assert counts(r.lenient.micro) == (0, 1, 1)


def test_label_mismatch_is_a_miss_and_a_false_positive() -> None:
    r = score([("d1", 0, 5, "Disease")], [("d1", 0, 5, "Chemical")])
    assert counts(r.strict.micro) == (0, 1, 1)
    assert counts(r.lenient.micro) == (0, 1, 1)
    assert counts(r.strict.per_label["Disease"]) == (0, 0, 1)
    assert counts(r.strict.per_label["Chemical"]) == (0, 1, 0)


def test_document_without_predictions_counts_its_misses() -> None:
    gold = [("d1", 0, 5, "Disease"), ("d2", 0, 4, "Disease"), ("d2", 6, 9, "Disease")]
    r = score(gold, [("d1", 0, 5, "Disease")], docs=["d1", "d2"])
    # tp 1 (d1), fn 2 (both d2 spans): P = 1/1, R = 1/3, F1 = 2*(1/3)/(4/3) = 0.5.
    assert counts(r.strict.micro) == (1, 0, 2)
    assert r.strict.micro.precision == 1.0
    assert r.strict.micro.recall == pytest.approx(1 / 3)
    assert r.strict.micro.f1 == pytest.approx(0.5)
    assert r.n_docs == 2


def test_prediction_outside_doc_set_is_ignored_and_counted() -> None:
    gold = [("d1", 0, 5, "Disease"), ("d4", 0, 2, "Disease")]
    pred = [("d1", 0, 5, "Disease"), ("d9", 0, 5, "Disease"), ("d9", 7, 9, "Disease")]
    r = score(gold, pred, docs=["d1"])
    # Only d1 is scored: its one span is found; d9's 2 preds and d4's 1 gold are dropped.
    assert counts(r.strict.micro) == (1, 0, 0)
    assert (r.n_pred, r.n_pred_outside, r.n_gold, r.n_gold_outside) == (1, 2, 1, 1)


def test_one_prediction_over_two_golds_is_one_hit() -> None:
    gold = [("d1", 0, 5, "Disease"), ("d1", 6, 10, "Disease")]
    r = score(gold, [("d1", 0, 10, "Disease")])
    # One-to-one: the long pred matches one gold (the larger overlap, [0,5)); the other is missed.
    assert counts(r.lenient.micro) == (1, 0, 1)
    assert counts(r.strict.micro) == (0, 1, 2)


def test_two_predictions_inside_one_gold_are_one_hit() -> None:
    r = score([("d1", 0, 10, "Disease")], [("d1", 0, 4, "Disease"), ("d1", 5, 10, "Disease")])
    assert counts(r.lenient.micro) == (1, 1, 0)
    assert r.lenient.micro.precision == 0.5


def test_exact_match_wins_over_a_covering_prediction() -> None:
    # Golds A=[2,7), B=[10,14); preds P1=[2,7) (exact), P2=[0,14) (covers both, sorts first).
    # Overlaps: P1-A 5, P2-A 5, P2-B 4. The tie P1-A / P2-A goes to the closer boundaries
    # (P1-A, distance 0 vs 2+7), so P2 is left for B: 2 hits. Taking P2-A first would give 1.
    gold = [("d1", 2, 7, "Disease"), ("d1", 10, 14, "Disease")]
    pred = [("d1", 0, 14, "Disease"), ("d1", 2, 7, "Disease")]
    r = score(gold, pred)
    assert counts(r.lenient.micro) == (2, 0, 0)
    assert counts(r.strict.micro) == (1, 1, 1)


def test_duplicated_prediction_is_a_false_positive() -> None:
    r = score([("d1", 0, 5, "Disease")], [("d1", 0, 5, "Disease")] * 2)
    assert counts(r.strict.micro) == (1, 1, 0)
    assert counts(r.lenient.micro) == (1, 1, 0)


def test_zero_true_positives_give_zeros_not_nan() -> None:
    r = score([("d1", 0, 5, "Disease")], [("d1", 20, 25, "Disease")])
    m = r.lenient.micro
    assert (m.precision, m.recall, m.f1) == (0.0, 0.0, 0.0)
    empty = Counts()
    assert (empty.precision, empty.recall, empty.f1) == (0.0, 0.0, 0.0)
    nothing = score([], [], docs=["d1"])
    assert not any(math.isnan(v) for v in nothing.strict.micro.to_dict().values())


def test_per_label_split() -> None:
    gold = [("d1", 0, 7, "Chemical"), ("d1", 10, 20, "Disease"), ("d1", 30, 40, "Disease")]
    pred = [("d1", 0, 7, "Chemical"), ("d1", 10, 20, "Disease"), ("d1", 50, 55, "Disease")]
    r = score(gold, pred)
    assert list(r.strict.per_label) == ["Chemical", "Disease"]
    assert counts(r.strict.per_label["Chemical"]) == (1, 0, 0)
    # Disease: [10,20) found, [30,40) missed, [50,55) extra: P = R = F1 = 1/2.
    assert counts(r.strict.per_label["Disease"]) == (1, 1, 1)
    assert r.strict.per_label["Disease"].f1 == pytest.approx(0.5)
    # Micro sums the labels: tp 2, fp 1, fn 1 -> P = R = F1 = 2/3.
    assert counts(r.strict.micro) == (2, 1, 1)
    assert r.strict.micro.f1 == pytest.approx(2 / 3)


def test_arrow_and_pandas_inputs_agree_and_columns_are_checked() -> None:
    gold = spans([("d1", 0, 5, "Disease"), ("d2", 3, 9, "Chemical")])
    pred = spans([("d1", 1, 5, "Disease")])
    a = score_spans(pa.Table.from_pandas(gold), pa.Table.from_pandas(pred), ["d1", "d2"])
    b = score_spans(gold, pred, ["d1", "d2"])
    assert a.to_dict() == b.to_dict()
    with pytest.raises(ValueError, match="label"):
        score_spans(gold.drop(columns="label"), pred, ["d1"])


def _naive_lenient_tp(gold: list[Span], pred: list[Span]) -> int:
    """The documented greedy rule, written as plainly as possible (quadratic)."""
    pairs = []
    for gi, (gd, gs, ge, gl) in enumerate(gold):
        for pi, (pd_, ps, pe, pl) in enumerate(pred):
            overlap = min(ge, pe) - max(gs, ps)
            if gd == pd_ and gl == pl and overlap > 0:
                dist = abs(gs - ps) + abs(ge - pe)
                pairs.append((-overlap, dist, (gs, ge), (ps, pe), gi, pi))
    used_g, used_p, tp = set(), set(), 0
    for *_, gi, pi in sorted(pairs):
        if gi not in used_g and pi not in used_p:
            used_g.add(gi)
            used_p.add(pi)
            tp += 1
    return tp


def test_lenient_matches_a_plain_reference_on_random_spans() -> None:
    rng = random.Random(7)
    for _ in range(60):

        def draw(n: int) -> list[Span]:
            out = []
            for _ in range(n):
                s = rng.randrange(0, 40)
                out.append((rng.choice("ab"), s, s + rng.randrange(0, 12), rng.choice("XY")))
            return out

        gold, pred = draw(rng.randrange(0, 16)), draw(rng.randrange(0, 16))
        r = score(gold, pred, docs=["a", "b"])
        assert r.lenient.micro.tp == _naive_lenient_tp(gold, pred)
        assert r.strict.micro.tp <= r.lenient.micro.tp <= min(len(gold), len(pred))


@pytest.mark.skipif(not DATA.is_dir(), reason="shared gold data not present")
@pytest.mark.parametrize("corpus", ["ncbi_disease", "bc5cdr"])
def test_real_gold_against_itself_and_shifted(corpus: str) -> None:
    gold = pq.read_table(DATA / corpus / "dev_entities.parquet").to_pandas()
    docs = pq.read_table(DATA / corpus / "dev_docs.parquet", columns=["doc_id"])
    doc_ids = docs["doc_id"].to_pylist()
    same = score_spans(gold, gold, doc_ids)
    assert same.strict.micro.f1 == 1.0 and same.lenient.micro.f1 == 1.0
    assert same.n_gold == len(gold)

    shifted = gold.assign(start=gold["start"] + 1, end=gold["end"] + 1)
    r = score_spans(gold, shifted, doc_ids)
    # Independent expectation. Strict: a shifted span is a hit only if it equals some gold.
    keys = set(zip(gold.doc_id, gold.start, gold.end, gold.label, strict=True))
    moved = zip(shifted.doc_id, shifted.start, shifted.end, shifted.label, strict=True)
    assert r.strict.micro.tp == sum(k in keys for k in moved)
    # Lenient: [s+1, e+1) still shares e-s-1 characters with its own gold [s, e), so spans of
    # one character are lost. It can reach another gold only if one starts exactly at e
    # (the corpora have none; checked here), so the answer is exact.
    g = gold.sort_values(["doc_id", "start"])
    assert not (g.groupby("doc_id")["start"].shift(-1) == g["end"]).any()
    lost = int((gold["end"] - gold["start"] < 2).sum())
    assert r.lenient.micro.tp == len(gold) - lost
    assert r.lenient.micro.recall == pytest.approx(1 - lost / len(gold))


def _write(path: Path, rows: list[dict], schema: pa.Schema) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), path)


def _run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "jobs.evaluate", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)


def _annotate_output(tmp: Path) -> tuple[Path, Path, Path]:
    """An annotate-like folder: entities/ and documents/ with the project's schemas."""
    pred = tmp / "run"
    ent = [
        ("d1", 0, 5, "Disease"),  # exact
        ("d1", 10, 14, "Chemical"),  # gold is [10,15): lenient only
        ("d3", 3, 8, "Disease"),  # exact
        ("d5", 0, 3, "Disease"),  # d5 is not a gold doc
    ]
    rows = [dict(doc_id=d, start=s, end=e, text="x", label=lb, score=0.9) for d, s, e, lb in ent]
    _write(pred / "entities" / "part-0.parquet", rows, entity_schema())
    docs = [  # d2 is deliberately absent: never annotated
        dict(doc_id=d, n_chars=20, n_tokens=5, n_chunks=1, status="ok", error=None, embedding=None)
        for d in ("d1", "d3", "d5")
    ]
    _write(pred / "documents" / "part-0.parquet", docs, document_schema(None))
    gold = tmp / "gold_entities.parquet"
    gold_rows = [("d1", 0, 5, "Disease"), ("d1", 10, 15, "Chemical"), ("d2", 0, 4, "Disease")]
    gold_rows += [("d3", 3, 8, "Disease"), ("d4", 0, 2, "Disease")]
    pq.write_table(pa.Table.from_pandas(spans(gold_rows), preserve_index=False), gold)
    gold_docs = tmp / "gold_docs.parquet"
    pq.write_table(pa.table({"doc_id": ["d1", "d2", "d3"], "text": ["t1", "t2", "t3"]}), gold_docs)
    return pred, gold, gold_docs


def test_cli_end_to_end(tmp_path: Path) -> None:
    pred, gold, gold_docs = _annotate_output(tmp_path)
    res = _run_cli("--pred", str(pred), "--gold-entities", str(gold), "--gold-docs", str(gold_docs))
    assert res.returncode == 0, res.stderr
    assert "ALL (micro)" in res.stdout
    out = json.loads((pred / "eval.json").read_text())
    # Scored docs d1-d3: 4 gold spans, 3 preds (d5's is ignored, d4's gold too).
    # Strict: tp 2 (d1 Disease, d3), fp 1 (d1 [10,14)), fn 2 (d1 [10,15), d2):
    # P = 2/3, R = 2/4, F1 = 2PR/(P+R) = (2/3)/(7/6) = 4/7.
    s = out["strict"]["micro"]
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 2)
    assert s["precision"] == pytest.approx(2 / 3) and s["f1"] == pytest.approx(4 / 7)
    # Lenient: [10,14) now hits [10,15): tp 3, fp 0, fn 1 (d2): P = 1, R = 3/4, F1 = 6/7.
    le = out["lenient"]["micro"]
    assert (le["tp"], le["fp"], le["fn"]) == (3, 0, 1)
    assert le["f1"] == pytest.approx(6 / 7)
    assert out["lenient"]["per_label"]["Chemical"]["tp"] == 1
    assert out["counts"]["n_pred_outside_docs"] == 1 and out["counts"]["n_gold_outside_docs"] == 1
    assert out["n_docs_not_in_pred_documents"] == 1  # d2
    assert out["doc_status"] == {"ok": 2}  # d1, d3

    # Without --gold-docs the set is gold docs (d1-d4) + pred documents (d1, d3, d5): 5 docs,
    # so d4's gold is a miss and d5's pred a false positive: strict tp 2, fp 2, fn 3.
    # In process, as a notebook calls it: the result is what the JSON file holds.
    other = tmp_path / "other.json"
    result = evaluate(str(pred), str(gold), json_uri=str(other))
    out = json.loads(other.read_text())
    assert result.report == out and result.json_uri == str(other)
    assert "ALL (micro)" in result.table
    assert out["counts"]["n_docs"] == 5
    s = out["strict"]["micro"]
    assert (s["tp"], s["fp"], s["fn"]) == (2, 2, 3)


def test_cli_names_uri_and_missing_column(tmp_path: Path) -> None:
    pred, _, _ = _annotate_output(tmp_path)
    bad = tmp_path / "bad_gold.parquet"
    pq.write_table(pa.table({"doc_id": ["d1"], "start": [0], "end": [5]}), bad)
    res = _run_cli("--pred", str(pred), "--gold-entities", str(bad))
    assert res.returncode != 0
    assert str(bad) in res.stderr and "label" in res.stderr
    assert not (pred / "eval.json").exists()
