"""The annotate job end to end on a local Ray: several shards, long and bad documents,
reruns, refusals and whole-input errors."""

from __future__ import annotations

import random

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_models as tm
from support.documents import run_ner, sentence
from support.job_helpers import read_run, read_table, run_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("job")
    oracle = tm.write_oracle_ner(root / "oracle")
    encoder = tm.write_random_encoder(root / "encoder")
    rng = random.Random(11)
    shards = []
    for k in range(3):
        texts = [sentence(rng, rng.randint(5, 30)) for _ in range(6)]
        texts[1] = " ".join(sentence(rng, 12) + " ." for _ in range(40))  # many windows
        texts[2] = "" if k == 0 else None
        texts[3] = "   \n\t"
        ids = [f"s{k}-{i}" for i in range(len(texts))]
        path = root / "in" / f"part-{k}.parquet"
        path.parent.mkdir(exist_ok=True)
        pq.write_table(pa.table({"doc_id": ids, "text": texts}), path)
        shards.append((ids, texts))
    return {"root": root, "oracle": str(oracle), "encoder": str(encoder), "shards": shards}


def test_job_end_to_end_then_resume_without_duplicates(corpus):
    root, out = corpus["root"], str(corpus["root"] / "out")
    args = ["--input", str(root / "in"), "--output", out, "--ner-model", corpus["oracle"]]
    args += ["--embed-model", corpus["encoder"], "--max-length", "24", "--stride", "6"]
    first = run_job(*args)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "Entities by label" in first.stdout

    docs = read_table(out, "documents").to_pylist()
    all_ids = [i for ids, _ in corpus["shards"] for i in ids]
    assert sorted(d["doc_id"] for d in docs) == sorted(all_ids)  # exactly one row each
    texts = {i: t for ids, ts in corpus["shards"] for i, t in zip(ids, ts)}
    by_id = {d["doc_id"]: d for d in docs}
    for i, t in texts.items():
        want = "ok" if t and t.strip() else "empty"
        assert by_id[i]["status"] == want, i
        if want == "ok":
            assert by_id[i]["n_chunks"] >= 1 and by_id[i]["embedding"] is not None
    assert by_id["s1-2"]["error"] == "text is null"

    ents = read_table(out, "entities").to_pylist()
    for e in ents:
        assert e["text"] == texts[e["doc_id"]][e["start"] : e["end"]]
    # the job on Ray gives exactly what the stage gives in process on each document
    ok_ids = [i for i, t in texts.items() if t and t.strip()]
    expected = run_ner(corpus["oracle"], [texts[i] for i in ok_ids], max_length=24, stride=6)
    want = sorted(
        (ok_ids[int(r["doc_id"][1:])], r["start"], r["end"], r["label"]) for r in expected
    )
    got = sorted((e["doc_id"], e["start"], e["end"], e["label"]) for e in ents)
    assert got == want and len(got) > 50

    emb = read_table(out, "embeddings")
    assert emb.schema.field("embedding").type == pa.list_(pa.float32(), 32)
    assert emb.num_rows == sum(d["n_chunks"] for d in docs)
    run = read_run(out)
    # context is on with a NER model: these headerless sentences have no sections
    assert run["rows"] == {
        "documents": len(docs),
        "entities": len(ents),
        "sections": 0,
        "embeddings": emb.num_rows,
    }
    assert read_table(out, "sections").num_rows == 0
    assert {e["negation"] for e in ents} <= {"affirmed", "negated", "possible"}
    assert run["shards"] == {"total": 3, "done": 3, "skipped": 0, "failed": 0}
    assert run["models"]["ner"]["weights_sha256"] and run["models"]["embed"]["dim"] == 32
    # the budget the actors used, here the CPU default (no --batch-tokens given)
    assert run["this_run"]["batch_tokens"] == {"ner": 16384, "embed": 16384}

    again = run_job(*args)
    assert again.returncode == 0, again.stderr[-3000:]
    assert read_run(out)["shards"] == {"total": 3, "done": 0, "skipped": 3, "failed": 0}
    assert read_table(out, "documents").num_rows == len(docs)
    assert read_table(out, "entities").num_rows == len(ents)

    # a shard written again since it was committed (one document more) is done again and
    # its files replaced: the new document appears once, no other row twice
    ids1, texts1 = corpus["shards"][1]
    grown = {"doc_id": [*ids1, "s1-new"], "text": [*texts1, sentence(random.Random(3), 9)]}
    pq.write_table(pa.table(grown), root / "in" / "part-1.parquet")
    regrown = run_job(*args)
    assert regrown.returncode == 0, regrown.stderr[-3000:]
    assert "1 committed shards changed since they were committed" in regrown.stderr
    run = read_run(out)
    assert run["shards"] == {"total": 3, "done": 1, "skipped": 2, "failed": 0}
    now = read_table(out, "documents").column("doc_id").to_pylist()
    assert sorted(now) == sorted([*all_ids, "s1-new"])
    assert run["rows"]["documents"] == len(now) and run["duplicate_doc_ids"]["count"] == 0

    # another model into the same output is refused, before any work
    other = tm.write_random_encoder(root / "encoder2", seed=9)
    refused = run_job(*args[:-6], "--embed-model", str(other), "--max-length", "24")
    assert refused.returncode == 2
    assert "another configuration" in refused.stderr
    # ... unless asked to overwrite: the new generation replaces the old one once complete;
    # this run also goes as three datasets (three blocks of two documents a shard)
    old_vectors = read_table(out, "documents").column("embedding").to_pylist()
    replaced = run_job(
        *args[:-6], "--embed-model", str(other), "--max-length", "24", "--mode", "overwrite",
        *["--docs-per-batch", "2", "--blocks-per-dataset", "3"],
    )  # fmt: skip
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert "dataset 3 of 3: 1 shards" in replaced.stderr
    run = read_run(out)
    assert run["shards"]["done"] == 3 and run["config"]["output_uri"] == out
    assert run["models"]["embed"]["local_dir"] == str(other)
    new_docs = read_table(out, "documents")
    assert new_docs.num_rows == len(docs) + 1
    assert new_docs.column("embedding").to_pylist() != old_vectors
    assert not (root / "out" / "_next").exists()
    assert run["duplicate_doc_ids"] == {"count": 0, "extra_rows": 0, "shards": []}


def test_whole_input_problems_fail_fast_with_the_shard_and_column(corpus, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    pq.write_table(pa.table({"doc_id": ["a"], "body": ["x"]}), bad / "p.parquet")
    res = run_job("--input", str(bad), "--output", str(tmp_path / "o"), "--ner-model", "/nope")
    assert res.returncode == 2
    assert "p.parquet" in res.stderr and "'text'" in res.stderr
    assert "Loading" not in res.stderr  # no model was loaded

    empty = tmp_path / "empty"
    empty.mkdir()
    res = run_job("--input", str(empty), "--output", str(tmp_path / "o"), "--ner-model", "x")
    assert res.returncode == 2 and "no Parquet files" in res.stderr

    res = run_job("--input", str(bad), "--output", str(tmp_path / "o"))
    assert res.returncode == 2 and "no model given" in res.stderr


def test_job_reads_and_writes_s3(corpus, s3_env):
    """Input shards and output tables on a real S3 server (SeaweedFS), reached only
    through AWS_ENDPOINT_URL and the standard credential variables."""
    from pipeline.storage import files as storage

    for k, (ids, texts) in enumerate(corpus["shards"][:2]):
        table = pa.table({"doc_id": ids, "text": texts})
        storage.write_parquet_table(storage.join(s3_env, "in", f"part-{k}.parquet"), table)
    out = storage.join(s3_env, "out")
    res = run_job(
        "--input", storage.join(s3_env, "in"), "--output", out,
        "--ner-model", corpus["oracle"], "--max-length", "24", "--stride", "6",
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    docs = read_table(out, "documents")
    assert sorted(docs.column("doc_id").to_pylist()) == sorted(
        i for ids, _ in corpus["shards"][:2] for i in ids
    )
    texts = {i: t for ids, ts in corpus["shards"] for i, t in zip(ids, ts)}
    ents = read_table(out, "entities").to_pylist()
    assert ents and all(e["text"] == texts[e["doc_id"]][e["start"] : e["end"]] for e in ents)
    assert read_run(out)["shards"]["done"] == 2
    # nothing temporary is left beside the tables
    assert not storage.list_files(storage.join(out, "_staging"))
    secret = storage_secret()
    assert secret not in res.stdout + res.stderr
    assert secret not in str(storage.read_json(storage.join(out, "run.json")))


def storage_secret() -> str:
    import os

    return os.environ["AWS_SECRET_ACCESS_KEY"]
