"""The whole job with given spans and linking, no NER model: exact names linked whatever
the vectors, labels respected, the index cached and invalidated, a changed dictionary
refused on resume, the threshold, and links/ as DuckDB reads it."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import AnnotateConfig, InputError, ModelSpec, annotate
from pipeline import schemas as S
from pipeline.storage import files as storage

pytestmark = pytest.mark.slow

NOTES = {
    "n1": "Patient has asthma and gout.",
    "n2": "Heart-Attack in 2019; no sepsis.",
}
SPANS = [("n1", "asthma"), ("n1", "gout"), ("n2", "Heart-Attack"), ("n2", "sepsis")]
TERMS = [
    ("D1", "asthma", "Disease"),
    ("D1", "bronchial asthma", "Disease"),
    ("D2", "gout", "Disease"),
    ("C7", "gout", "Chemical"),  # the same name, another type: never chosen for a Disease
    ("D3", "heart attack", "Disease"),
    ("D3", "myocardial infarction", "Disease"),
    ("D4", "septicaemia", "Disease"),
    ("C8", "sodium chloride", "Chemical"),
]


def _write_terms(path, rows) -> str:
    cols = list(zip(*rows))
    pq.write_table(pa.table({"concept_id": cols[0], "name": cols[1], "label": cols[2]}), path)
    return str(path)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("link")
    pq.write_table(
        pa.table({"doc_id": list(NOTES), "text": list(NOTES.values())}), root / "notes.parquet"
    )
    rows = []
    for doc, mention in SPANS:
        start = NOTES[doc].index(mention)
        rows.append({"doc_id": doc, "start": start, "end": start + len(mention),
                     "label": "Disease"})  # fmt: skip
    pq.write_table(pa.Table.from_pylist(rows), root / "spans.parquet")
    _write_terms(root / "terms.parquet", TERMS)
    return root


@pytest.fixture
def cache(tmp_path_factory, monkeypatch):
    path = tmp_path_factory.getbasetemp() / "link-cache"
    monkeypatch.setenv("BIOMED_ANNOTATE_CACHE", str(path))
    return path


def _config(corpus, model: str, out: str, terms: str = "terms.parquet", **kw) -> AnnotateConfig:
    return AnnotateConfig(
        str(corpus / "notes.parquet"), str(corpus / out), spans_uri=str(corpus / "spans.parquet"),
        link_dictionary=str(corpus / terms), link=ModelSpec(model, "link"), link_top_k=3, **kw,
    )  # fmt: skip


def test_spans_are_linked_the_index_cached_and_a_changed_dictionary_refused(
    local_ray, corpus, cache, model_dirs
):
    result = annotate(_config(corpus, model_dirs["encoder"], "out"))
    assert result.ok, result.error
    linking = result.run["linking"]
    assert linking["index"]["cache_hit"] is False
    assert linking["dictionary"]["names"] == len(TERMS)
    assert result.run["models"]["link"]["source"] == model_dirs["encoder"]
    summary = result.summary()
    assert f"Linking: {len(TERMS)} names of 6 concepts; name vectors embedded" in summary
    assert "links/  (12 rows)" in summary

    ents = storage.read_parquet_table(storage.join(result.output_uri, S.ENTITIES_DIR))
    got = {r["text"]: (r["concept_id"], r["concept_name"], r["concept_score"])
           for r in ents.to_pylist()}  # fmt: skip
    # exact (case- and punctuation-normalised) names win whatever the random vectors say
    assert got["asthma"] == ("D1", "asthma", 1.0)
    assert got["gout"] == ("D2", "gout", 1.0)  # not C7: a Chemical name
    assert got["Heart-Attack"] == ("D3", "heart attack", 1.0)
    assert got["sepsis"][0] in {"D1", "D2", "D3", "D4"} and got["sepsis"][2] < 1.0

    links_uri = storage.join(result.output_uri, S.LINKS_DIR)
    links = duckdb.sql(
        f"SELECT * FROM read_parquet('{links_uri}/**/*.parquet') ORDER BY doc_id, start, rank"
    ).df()
    assert set(links.columns) == set(S.link_schema().names)
    assert len(links) == 4 * 3  # three candidates each: 4 Disease concepts in the dictionary
    assert "C7" not in set(links.concept_id) and "C8" not in set(links.concept_id)
    for (_, _), group in links.groupby(["doc_id", "start"]):
        assert list(group["rank"]) == [1, 2, 3]
        assert group["score"].is_monotonic_decreasing
        assert group["concept_id"].is_unique
    best = links[links["rank"] == 1].set_index("start")["concept_id"]
    for r in ents.to_pylist():
        assert best[r["start"]] == r["concept_id"]

    # another output, same dictionary and model: the names are not embedded again
    again = annotate(_config(corpus, model_dirs["encoder"], "out2", link_min_score=1.01))
    assert again.ok, again.error
    assert again.run["linking"]["index"]["cache_hit"] is True
    # no best candidate reaches 1.01: every concept null, the candidates still listed
    ents2 = storage.read_parquet_table(storage.join(again.output_uri, S.ENTITIES_DIR))
    assert ents2.column("concept_id").null_count == len(SPANS)
    assert storage.read_parquet_table(storage.join(again.output_uri, S.LINKS_DIR)).num_rows == 12

    # the same command again resumes: nothing left to do, no index built
    resumed = annotate(_config(corpus, model_dirs["encoder"], "out"))
    assert resumed.ok and resumed.run["shards"]["skipped"] == 1
    assert resumed.run["linking"]["index"] == {}

    # a changed dictionary: refused on resume, embedded again (another key) on overwrite
    _write_terms(corpus / "terms2.parquet", [*TERMS, ("D5", "sepsis", "Disease")])
    with pytest.raises(InputError, match="configuration"):
        annotate(_config(corpus, model_dirs["encoder"], "out", "terms2.parquet"))
    changed = annotate(
        _config(corpus, model_dirs["encoder"], "out", "terms2.parquet", mode="overwrite")
    )
    assert changed.ok, changed.error
    assert changed.run["linking"]["index"]["cache_hit"] is False
    ents3 = storage.read_parquet_table(storage.join(changed.output_uri, S.ENTITIES_DIR))
    assert {r["text"]: r["concept_id"] for r in ents3.to_pylist()}["sepsis"] == "D5"
    # the overwrite replaced links/ too: its best candidates are the entities' concepts
    links3 = storage.read_parquet_table(storage.join(changed.output_uri, S.LINKS_DIR))
    best3 = {
        (r["doc_id"], r["start"]): r["concept_id"] for r in links3.to_pylist() if r["rank"] == 1
    }
    assert best3 == {(r["doc_id"], r["start"]): r["concept_id"] for r in ents3.to_pylist()}


def test_bad_dictionaries_fail_before_any_model_loads(corpus, tmp_path, model_dirs):
    pq.write_table(pa.table({"concept_id": ["D1"], "term": ["x"]}), tmp_path / "bad.parquet")
    cfg = _config(corpus, str(tmp_path / "no-such-model"), "bad", str(tmp_path / "bad.parquet"))
    with pytest.raises(InputError, match="no column 'name'"):
        annotate(cfg)  # the model folder does not exist: the dictionary was checked first
    no_entities = AnnotateConfig(
        str(corpus / "notes.parquet"), str(tmp_path / "o"),
        embed=ModelSpec(model_dirs["encoder"], "embed"),
        link_dictionary=str(corpus / "terms.parquet"),
        link=ModelSpec(model_dirs["encoder"], "link"),
    )  # fmt: skip
    with pytest.raises(InputError, match="links entities"):
        annotate(no_entities)
