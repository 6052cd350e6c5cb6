"""``pipeline.annotate`` in process, as a notebook runs it: the result object is the
run.json the job writes, a second call resumes, and refusals raise before any work."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_models as tm
from support.documents import sentence

from pipeline import AnnotateConfig, InputError, ModelSpec, Scheduling, annotate
from pipeline.storage import files as storage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("library")
    rng = random.Random(5)
    for k in range(2):
        texts = [sentence(rng, rng.randint(5, 20)) for _ in range(4)]
        path = root / "in" / f"part-{k}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"doc_id": [f"d{k}-{i}" for i in range(4)], "text": texts}), path)
    return {"root": root, "oracle": str(tm.write_oracle_ner(root / "oracle"))}


def _config(setup, **kw) -> AnnotateConfig:
    root = setup["root"]
    ner = ModelSpec(setup["oracle"], "ner", max_length=24)
    return AnnotateConfig(str(root / "in"), str(root / "out"), ner=ner, stride=6, **kw)


def test_annotate_returns_what_run_json_holds_and_resumes(local_ray, setup):
    cfg = _config(setup)
    first = annotate(cfg, Scheduling(docs_per_batch=4))
    assert first.ok and first.exit_code == 0 and first.error is None
    on_disk = json.loads(json.dumps(storage.read_json(storage.join(cfg.output_uri, "run.json"))))
    assert json.loads(json.dumps(first.run)) == on_disk  # JSON turns int keys to strings
    assert first.run["shards"] == {"total": 2, "done": 2, "skipped": 0, "failed": 0}
    assert first.run["rows"]["documents"] == 8
    n_entities = first.run["rows"]["entities"]
    assert n_entities > 0
    assert "2 done" in first.summary() and "entities" in first.summary()

    again = annotate(cfg)  # same configuration: every shard is already committed
    assert again.ok
    assert again.run["shards"]["skipped"] == 2 and again.run["shards"]["done"] == 0
    assert again.run["rows"]["entities"] == n_entities  # nothing lost, nothing doubled


def test_annotate_refuses_before_any_work(local_ray, setup, tmp_path):
    with pytest.raises(InputError, match="no model"):
        annotate(AnnotateConfig(str(setup["root"] / "in"), str(tmp_path / "o")))
    with pytest.raises(InputError, match="note_text"):
        annotate(_config(setup, text_column="note_text"))
    assert not (tmp_path / "o").exists()


def test_integer_note_ids_come_back_as_integers_in_every_table(local_ray, setup, tmp_path):
    rng = random.Random(9)
    ids = [101, 0, 7_000_000_001]
    texts = [sentence(rng, rng.randint(5, 20)) for _ in ids]
    pq.write_table(pa.table({"doc_id": ids, "text": texts}), tmp_path / "notes.parquet")
    encoder = str(tm.write_random_encoder(tmp_path / "enc", max_positions=64))
    cfg = AnnotateConfig(
        str(tmp_path / "notes.parquet"), str(tmp_path / "out"),
        ner=ModelSpec(setup["oracle"], "ner", max_length=24),
        embed=ModelSpec(encoder, "embed", max_length=24), stride=6,
    )  # fmt: skip
    assert annotate(cfg, Scheduling(docs_per_batch=4)).ok
    for table in ("documents", "entities", "embeddings"):
        got = pq.read_table(tmp_path / "out" / table)
        assert got.schema.field("doc_id").type == pa.int64(), table
        assert set(got.column("doc_id").to_pylist()) <= set(ids), table
    docs = pq.read_table(tmp_path / "out" / "documents").to_pandas()
    assert sorted(docs["doc_id"]) == sorted(ids) and str(docs["doc_id"].dtype) == "int64"
