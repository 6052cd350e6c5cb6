"""The whole job with clinical context, in process: given spans with no model (every bad
span kind counted, nothing lost), given spans beside a NER model, resuming a context run,
refusing a --no-context rerun, and the new columns as pandas, DuckDB and Polars read them."""

from __future__ import annotations

import duckdb
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_models as tm

from pipeline import AnnotateConfig, InputError, ModelSpec, annotate
from pipeline import schemas as S
from pipeline.evaluation.output import evaluate
from pipeline.storage import files as storage

pytestmark = pytest.mark.slow

NOTES = {
    "n1": (
        "HISTORY OF PRESENT ILLNESS:, She denies chest pain.,PAST MEDICAL HISTORY:, Asthma."
        ",FAMILY HISTORY:, Mother has diabetes."
    ),
    "n2": "",  # status empty: a span on it is rejected, the document row stays
    "n3": "Return if fever develops. No pneumonia.",
}


def _span(doc: str | None, mention: str | None, label: str | None = "Problem") -> dict:
    text = NOTES.get(doc or "", "")
    start = text.index(mention) if mention else 0
    return {"doc_id": doc, "start": start, "end": start + len(mention or ""), "label": label}


GOOD = [_span("n1", "chest pain"), _span("n1", "Asthma"), _span("n1", "diabetes"),
        _span("n3", "fever")]  # fmt: skip
# One of each reason a given span is not attached.
BAD = {
    "null": {"doc_id": "n3", "start": 0, "end": 6, "label": None},
    "start_not_before_end": {"doc_id": "n1", "start": 10, "end": 10, "label": "Problem"},
    "unknown_doc_id": {"doc_id": "zz", "start": 0, "end": 3, "label": "Problem"},
    "document_not_ok": {"doc_id": "n2", "start": 0, "end": 3, "label": "Problem"},
    "out_of_range": {"doc_id": "n3", "start": 5, "end": 500, "label": "Problem"},
}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("context")
    pq.write_table(
        pa.table({"doc_id": list(NOTES), "text": list(NOTES.values())}), root / "notes.parquet"
    )
    spans = pa.Table.from_pylist(
        [*GOOD, *BAD.values()],
        schema=pa.schema(
            [("doc_id", pa.string()), ("start", pa.int64()), ("end", pa.int64()),
             ("label", pa.string())]
        ),
    )  # fmt: skip
    (root / "spans").mkdir()
    pq.write_table(spans, root / "spans" / "part-0.parquet")
    return root


def _config(corpus, out: str, **kw) -> AnnotateConfig:
    return AnnotateConfig(
        str(corpus / "notes.parquet"), str(corpus / out), spans_uri=str(corpus / "spans"), **kw
    )


def test_given_spans_with_no_model_get_context_and_every_bad_span_is_counted(local_ray, corpus):
    result = annotate(_config(corpus, "spans-only"))
    assert result.ok, result.error
    run = result.run
    assert run["models"] == {}  # no model was loaded
    assert run["rows"]["documents"] == 3  # the empty note keeps its row
    assert run["spans_given"] == len(GOOD) + len(BAD)
    assert run["spans_attached"] == len(GOOD)
    assert run["spans_rejected"] == dict.fromkeys(BAD, 1)
    assert run["spans_rejected_doc_ids"]["unknown_doc_id"] == ["zz"]
    assert run["spans_rejected_doc_ids"]["document_not_ok"] == ["n2"]
    assert "unknown_doc_id 1 (first doc_ids: zz)" in result.summary()

    ents = pd.read_parquet(storage.join(result.output_uri, S.ENTITIES_DIR))
    ents = ents.sort_values(["doc_id", "start"]).reset_index(drop=True)
    assert len(ents) == len(GOOD)
    assert ents["score"].isna().all()  # given spans carry no model score
    for row in ents.itertuples():
        assert row.text == NOTES[row.doc_id][row.start : row.end]
    rows = storage.read_parquet_table(storage.join(result.output_uri, S.ENTITIES_DIR)).to_pylist()
    got = {r["text"]: tuple(r[c] for c in S.CONTEXT_COLUMNS) for r in rows}
    assert got == {
        "chest pain": ("negated", "recent", "patient", "history_of_present_illness"),
        "Asthma": ("affirmed", "historical", "patient", "past_medical_history"),
        "diabetes": ("affirmed", "recent", "other", "family_history"),
        "fever": ("affirmed", "hypothetical", "patient", None),
    }
    assert run["entities_by_negation"] == {"affirmed": 3, "negated": 1}

    sections = pd.read_parquet(storage.join(result.output_uri, S.SECTIONS_DIR))
    assert list(sections["section"]) == [
        "history_of_present_illness", "past_medical_history", "family_history"
    ]  # fmt: skip
    for row in sections.itertuples():
        text = NOTES[row.doc_id]
        assert row.title == text[row.title_start : row.title_end]
        assert row.start == row.title_start and row.end <= len(text)
    assert sections["end"].iloc[-1] == len(NOTES["n1"])

    # jobs.evaluate scores the context columns when the gold spans carry them
    gold = pa.Table.from_pylist(
        [{**g, "negation": n, "temporality": t, "experiencer": x}
         for g, (n, t, x) in zip(GOOD, [("negated", "recent", "patient"),
                                        ("affirmed", "historical", "patient"),
                                        ("affirmed", "recent", "other"),
                                        ("negated", "hypothetical", "patient")])]
    )  # fmt: skip
    pq.write_table(gold, corpus / "gold.parquet")
    scored = evaluate(
        result.output_uri, str(corpus / "gold.parquet"), json_uri=str(corpus / "e.json")
    )
    ctx = scored.report["context"]
    assert ctx["n_matched"] == 4 and ctx["all_axes_right"] == pytest.approx(0.75)  # fever
    assert ctx["axes"]["negation"]["values"]["negated"]["recall"] == pytest.approx(0.5)
    assert "all axes right: 75.0%" in scored.table


def test_the_new_columns_read_alike_in_pandas_duckdb_and_polars(local_ray, corpus):
    out = annotate(_config(corpus, "readers")).output_uri
    ents = storage.join(out, S.ENTITIES_DIR, "*.parquet")
    secs = storage.join(out, S.SECTIONS_DIR, "*.parquet")
    declared = S.entity_schema()
    for name in S.CONTEXT_COLUMNS:
        assert declared.field(name).type == pa.string()
    by_duckdb = duckdb.sql(f"SELECT negation, score, section FROM '{ents}' ORDER BY start").df()
    by_polars = pl.read_parquet(ents).sort("start")
    by_pandas = pd.read_parquet(storage.join(out, S.ENTITIES_DIR)).sort_values("start")
    assert list(by_duckdb["negation"]) == by_polars["negation"].to_list()
    assert list(by_pandas["negation"]) == by_polars["negation"].to_list()
    assert by_polars.schema["negation"] == pl.String
    assert by_polars.schema["score"] == pl.Float32 and by_polars["score"].null_count() == 4
    sec = pl.read_parquet(secs)
    assert sec.schema["title_start"] == pl.Int32 and sec.schema["section"] == pl.String
    types = dict(duckdb.sql(f"DESCRIBE SELECT * FROM '{secs}'").fetchall()[i][:2] for i in range(7))
    assert types["start"] == "INTEGER" and types["title"] == "VARCHAR"


def test_a_context_run_resumes_and_a_no_context_rerun_is_refused(local_ray, corpus):
    cfg = _config(corpus, "resume")
    first = annotate(cfg)
    again = annotate(cfg)
    assert again.run["shards"]["skipped"] == 1 and again.run["shards"]["done"] == 0
    assert again.run["rows"] == first.run["rows"]
    assert again.run["spans_rejected"] == first.run["spans_rejected"]
    with pytest.raises(InputError, match="another configuration"):
        annotate(_config(corpus, "resume", context=False))


def test_no_context_keeps_the_columns_null_and_writes_no_sections(local_ray, corpus):
    result = annotate(_config(corpus, "off", context=False))
    ents = pd.read_parquet(storage.join(result.output_uri, S.ENTITIES_DIR))
    assert len(ents) == len(GOOD)
    assert ents[list(S.CONTEXT_COLUMNS)].isna().all().all()
    assert S.SECTIONS_DIR not in result.run["rows"]
    assert not storage.exists(storage.join(result.output_uri, S.SECTIONS_DIR))


def test_given_spans_beside_a_ner_model_are_both_kept(local_ray, corpus, tmp_path):
    texts = {"a": "she denies diabetes and asthma .", "b": "history of pneumonia ."}
    pq.write_table(pa.table({"doc_id": list(texts), "text": list(texts.values())}),
                   tmp_path / "notes.parquet")  # fmt: skip
    start = texts["a"].index("diabetes")
    given = [{"doc_id": "a", "start": start, "end": start + 8, "label": "Problem"},
             {"doc_id": "b", "start": 0, "end": 7, "label": "Section"}]  # fmt: skip
    pq.write_table(pa.Table.from_pylist(given), tmp_path / "given.parquet")
    oracle = str(tm.write_oracle_ner(tmp_path / "oracle"))
    cfg = AnnotateConfig(
        str(tmp_path / "notes.parquet"), str(tmp_path / "out"),
        ner=ModelSpec(oracle, "ner", max_length=24), stride=6,
        spans_uri=str(tmp_path / "given.parquet"),
    )  # fmt: skip
    result = annotate(cfg)
    ents = pd.read_parquet(storage.join(result.output_uri, S.ENTITIES_DIR))
    model, spans = ents[ents["score"].notna()], ents[ents["score"].isna()]
    assert sorted(model["text"]) == ["asthma", "diabetes", "pneumonia"]
    assert sorted(zip(spans["text"], spans["label"])) == [
        ("diabetes", "Problem"), ("history", "Section")
    ]  # fmt: skip
    # the same offsets, from either set, get the same context
    both = ents[ents["text"] == "diabetes"]
    assert len(both) == 2 and set(both["negation"]) == {"negated"}
    assert set(ents.loc[ents["text"] == "pneumonia", "temporality"]) == {"historical"}
