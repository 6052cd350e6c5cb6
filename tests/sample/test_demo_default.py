"""The embedded default (no --input, no model): on its first run it fine-tunes the demo
NER model on the sample's training part, and the summary scores it on the held-out part."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from support.job_helpers import read_run, read_table, run_job

from pipeline import schemas as S
from pipeline.sample.demo_model import CORPUS_DIR, DEMO_DIR, MARKER

pytestmark = pytest.mark.slow


def _gold_spans(path: Path) -> set[tuple]:
    t = pq.read_table(path, columns=[S.DOC_ID, S.START, S.END, S.LABEL])
    return set(zip(*(t.column(c).to_pylist() for c in t.column_names)))


@pytest.mark.timeout(1800)  # minutes on 2 quiet cores; far more on a shared machine
def test_first_default_run_trains_the_demo_model_and_scores_it(tmp_path: Path) -> None:
    cache, out = tmp_path / "cache", tmp_path / "out"
    res = run_job("--output", str(out), env={"BIOMED_ANNOTATE_CACHE": str(cache)}, timeout=1700)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "fine-tuning the demo NER model" in res.stderr
    assert (cache / DEMO_DIR / MARKER).exists()
    assert (cache / DEMO_DIR / "model.safetensors").exists()
    assert "DEMO model" in res.stdout and "invented text" in res.stdout

    # The F1 printed is the held-out score of this run's own entity table: recount the
    # strict matches here from the tables themselves (exact doc, start, end, label).
    held = pq.read_table(cache / CORPUS_DIR / "heldout_docs.parquet").column(S.DOC_ID)
    held_ids = set(held.to_pylist())
    gold = _gold_spans(cache / CORPUS_DIR / "heldout_entities.parquet")
    ents = read_table(str(out), S.ENTITIES_DIR)
    pred = {
        (d, s, e, lab)
        for d, s, e, lab in zip(
            *(ents.column(c).to_pylist() for c in (S.DOC_ID, S.START, S.END, S.LABEL))
        )
        if d in held_ids
    }
    tp = len(gold & pred)
    f1 = 2 * tp / (len(gold) + len(pred))
    printed = float(
        re.search(r"Strict F1 on the \d+ held-out sample documents: ([0-9.]+)", res.stdout)[1]
    )
    assert printed == pytest.approx(f1, abs=1e-3)
    # An untrained token head finds nothing exact; a trained one finds most entities of
    # this regular invented text (the bar: a useful demo, not a real model).
    assert f1 >= 0.8, f1

    # Context: the summary shows the negated share, and the rules' accuracy on held-out
    # notes, recounted here from the gold file and the entity table.
    assert re.search(r"Entities by negation: .*negated \d+ \(\d+\.\d%\)", res.stdout)
    docs = pq.read_table(cache / CORPUS_DIR / "heldout_docs.parquet").to_pylist()
    notes = {d[S.DOC_ID] for d in docs if d["source"] == "note"}
    axes = (S.NEGATION, S.TEMPORALITY, S.EXPERIENCER)
    key = (S.DOC_ID, S.START, S.END)
    gold_ctx = {
        tuple(r[k] for k in key): tuple(r[a] for a in axes)
        for r in pq.read_table(cache / CORPUS_DIR / "heldout_entities.parquet").to_pylist()
        if r[S.DOC_ID] in notes
    }
    pred_ctx = {tuple(r[k] for k in key): tuple(r[a] for a in axes) for r in ents.to_pylist()}
    matched = [k for k in gold_ctx if k in pred_ctx]
    right = sum(gold_ctx[k] == pred_ctx[k] for k in matched) / len(matched)
    shown = re.search(r"on (\d+) held-out note mentions found exactly: all three right "
                      r"([0-9.]+)%", res.stdout)  # fmt: skip
    assert shown and int(shown[1]) == len(matched)
    assert float(shown[2]) == pytest.approx(100 * right, abs=0.05)
    assert right >= 0.85, right

    # Every sample document is in the documents table, and the embeddings are there too.
    run = read_run(str(out))
    n_docs = sum(
        pq.read_metadata(p).num_rows for p in (cache / CORPUS_DIR / "docs").glob("*.parquet")
    )
    assert run["rows"][S.DOCUMENTS_DIR] == n_docs
    assert run["rows"][S.EMBEDDINGS_DIR] > 0
