"""Bad input: every problem document comes out as one ``documents`` row with a status
and a message, every other document is processed, and whole-input problems stop the
job before any work with a message naming the shard and column.

The per-document checks run in process on ``document_columns``; one job run over a
folder of awkward shards checks them end to end (batched into one run for time).
"""

from __future__ import annotations

import json
import random

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support import tiny_models as tm
from support.documents import sentence, unchecked_strings, wtf8
from support.job_helpers import read_run, read_table, run_job

from pipeline.stages.read import ReadSettings, document_columns, read_shard

SETTINGS = ReadSettings("doc_id", "text", max_chars=1_000_000, docs_per_batch=1000)
BIG = 5_000_000  # characters: a 5 MB document, over the default --max-chars


def validate(ids: list, texts, settings: ReadSettings = SETTINGS) -> list[dict]:
    table = pa.table({"doc_id": ids, "text": texts})
    seen: dict[str, int] = {}
    out = document_columns(table, "s3://bucket/shard-7.parquet", settings, seen, 0)
    return out.to_pylist()


# ---------------------------------------------------------------- in process (fast)


def test_null_empty_and_whitespace_text_are_empty_with_no_text_passed_on():
    rows = validate(["a", "b", "c", "d"], [None, "", " \n\t\u00a0", "x"])
    assert [r["_status"] for r in rows] == ["empty", "empty", "empty", "ok"]
    assert rows[0]["_error"] == "text is null"
    assert [r["_text"] for r in rows] == ["", "", "", "x"]
    assert [r["_n_chars"] for r in rows] == [0, 0, 4, 1]


def test_a_5mb_document_is_an_error_never_truncated():
    rows = validate(["a", "b"], ["x" * BIG, "short"])
    assert rows[0]["_status"] == "error" and rows[0]["_text"] == ""
    assert rows[0]["_n_chars"] == BIG
    assert str(BIG) in rows[0]["_error"] and "--max-chars" in rows[0]["_error"]
    assert rows[1]["_status"] == "ok"
    # the limit is in characters, not bytes: 4-byte emoji count once each
    emoji = validate(["e"], ["😀" * 10], ReadSettings("doc_id", "text", 10, 1000))
    assert emoji[0]["_status"] == "ok" and emoji[0]["_n_chars"] == 10


@pytest.mark.parametrize(
    ("array", "type_name"),
    [
        (pa.array([1, 2], pa.int64()), "int64"),
        (pa.array([1.5, None], pa.float64()), "double"),
        (pa.array([["a"], ["b", "c"]], pa.list_(pa.string())), "list<item: string>"),
    ],
)
def test_a_number_or_list_where_text_should_be_names_the_type_and_shard(array, type_name):
    rows = validate(["a", "b"], array)
    for r in rows:
        assert r["_status"] == "error" and r["_text"] == ""
        assert type_name in r["_error"] and "s3://bucket/shard-7.parquet" in r["_error"]
        assert "'text'" in r["_error"]


def test_control_characters_and_other_scripts_pass_through_unchanged():
    texts = ["a\x00b\x07\x1b\r\n", "患者は糖尿病", "المريض", "😀🩺 x", "e\u0301\u200b"]
    rows = validate([f"d{i}" for i in range(len(texts))], texts)
    assert [r["_status"] for r in rows] == ["ok"] * len(texts)
    assert [r["_text"] for r in rows] == texts
    assert [r["_n_chars"] for r in rows] == [len(t) for t in texts]  # code points


def test_lone_surrogates_cannot_be_written_from_python_and_are_errors_when_read():
    # Documented outcome: pyarrow refuses a Python str with a lone surrogate ...
    with pytest.raises(UnicodeEncodeError):
        pa.array(["a\ud800b"])
    # ... so such text reaches us only as invalid UTF-8 bytes from another writer,
    # which Parquet readers do not check. Those rows (and only those) become errors.
    texts = unchecked_strings([wtf8("a\ud800b"), b"fine", None, wtf8("\udfff")])
    rows = validate(["a", "b", "c", "d"], texts)
    assert [r["_status"] for r in rows] == ["error", "ok", "empty", "error"]
    assert rows[0]["_error"] == "text column 'text' holds invalid UTF-8"
    assert rows[0]["_text"] == "" and rows[0]["_n_chars"] == 0
    ids = unchecked_strings([b"ok", wtf8("\ud800")])
    rows = validate(ids, ["x", "y"])
    assert rows[0]["_status"] == "ok"
    assert rows[1]["_status"] == "error" and rows[1]["doc_id"] is None
    assert "invalid UTF-8" in rows[1]["_error"]


def test_null_or_empty_doc_id_is_an_error():
    rows = validate([None, "", "a"], ["x", "y", "z"])
    assert [r["_status"] for r in rows] == ["error", "error", "ok"]
    assert rows[0]["_error"] == rows[1]["_error"] == "doc_id is null or empty"
    assert rows[0]["_text"] == ""


def test_a_repeated_doc_id_within_a_shard_is_reported_with_the_first_row(tmp_path):
    path = tmp_path / "dup.parquet"
    ids = ["a", "b", "a", "c", "b", "a", None, None]
    pq.write_table(pa.table({"doc_id": ids, "text": [f"t{i}" for i in range(8)]}), path)
    # blocks of 3 rows: the repeats of row 0 sit in the first and second blocks
    rows = [
        r
        for block in read_shard(str(path), ReadSettings("doc_id", "text", 100, 3))
        for r in block.to_pylist()
    ]
    assert [r["_row"] for r in rows] == list(range(8))
    assert [r["_status"] for r in rows] == ["ok", "ok", "error", "ok", "error", "error"] + [
        "error"
    ] * 2
    assert "row 0 " in rows[2]["_error"] and "row 0 " in rows[5]["_error"]
    assert "row 1 " in rows[4]["_error"]
    assert all(r["_error"] == "doc_id is null or empty" for r in rows[6:])  # not repeats
    assert rows[2]["_text"] == ""  # the repeat is not processed


def test_schema_variants_read_as_plain_text(tmp_path):
    texts = ["alpha beta", "gamma", "alpha beta"]
    variants = {
        "large": pa.array(texts, pa.large_string()),
        "dict": pa.array(texts).dictionary_encode(),
        "view": pa.array(texts, pa.string_view()),
    }
    for name, arr in variants.items():
        path = tmp_path / f"{name}.parquet"
        extra = pa.array([{"k": 1}, {"k": 2}, None], pa.struct([("k", pa.int8())]))
        pq.write_table(pa.table({"extra": extra, "text": arr, "doc_id": [1, 2, 3]}), path)
        (block,) = read_shard(str(path), SETTINGS)
        assert block.column("_text").type == pa.string(), name
        assert block.column("_text").to_pylist() == texts, name
        assert block.column("doc_id").to_pylist() == ["1", "2", "3"], name  # numeric ids
        assert block.column("_status").to_pylist() == ["ok"] * 3, name


def test_integer_ids_stay_integers_and_id_zero_is_an_id():
    settings = ReadSettings("doc_id", "text", 1_000_000, 1000, id_type="int64")
    ids = pa.array([0, 101, None, 0], pa.int32())
    table = pa.table({"doc_id": ids, "text": ["a b", "c", "d", "e"]})
    out = document_columns(table, "s", settings, seen={})
    assert out.column("doc_id").type == pa.int64()
    assert out.column("doc_id").to_pylist() == [0, 101, None, 0]
    assert out.column("_status").to_pylist() == ["ok", "ok", "error", "error"]
    errors = out.column("_error").to_pylist()
    assert errors[2] == "doc_id is null or empty"
    assert errors[3].startswith("duplicate doc_id: row 0 ")  # 0 is an id like any other


# ------------------------------------------------------------ the job (one run, Ray)

CJK = "患者は asthma のため heparin を投与された。治療asthma"
ARABIC = "المريض aspirin مع sepsis"
EMOJI = "😀 sepsis 🩺 heparin 👍🏽 anemia"
CONTROL = "\x00aspirin\x07 was given\x1b for asthma\r\n\x0b"
SPECIAL = {"cjk": CJK, "arabic": ARABIC, "emoji": EMOJI, "control": CONTROL}
# Entity words the oracle labels, by construction of these texts (tests/support/tiny_models.py).
WANT_LABEL = {"asthma": "Disease", "sepsis": "Disease", "anemia": "Disease"}
WANT_LABEL |= {"aspirin": "Chemical", "heparin": "Chemical"}


def expected_entities(doc_id: str, text: str) -> set[tuple]:
    """Every oracle word in ``text`` as (doc_id, start, end, label), offsets in code points."""
    found = set()
    for word, label in WANT_LABEL.items():
        start = text.find(word)
        while start >= 0:
            found.add((doc_id, start, start + len(word), label))
            start = text.find(word, start + 1)
    return found


@pytest.fixture(scope="module")
def bad_corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad")
    inp = root / "in"
    inp.mkdir()
    rng = random.Random(5)

    def plain(k: int) -> list[str]:
        return [sentence(rng, rng.randint(4, 20)) for _ in range(k)]

    shards: dict[str, pa.Table] = {}
    ids = ["m-null", "m-empty", "m-space", "m-big", "m-dup", None, "", "m-dup", "x-dup"]
    texts = [None, "", "  \n\t ", "x" * BIG, "the patient denies asthma", "aspirin", "aspirin"]
    texts += ["heparin and sepsis", "anemia"]
    ids += list(SPECIAL) + ["m-surrogate", "m-ok"]
    raw = [None if t is None else t.encode() for t in texts + list(SPECIAL.values())]
    raw += [wtf8("aspirin \ud83d sepsis"), b"insulin for diabetes"]
    shards["a-mixed"] = pa.table({"doc_id": ids, "text": unchecked_strings(raw)})
    n = 5
    shards["b-large-extra"] = pa.table(
        {
            "doc_id": ["x-dup"] + [f"b{i}" for i in range(1, n)],
            "text": pa.array(plain(n), pa.large_string()),
            "source": pa.array(range(n), pa.int32()),
            "meta": pa.array([{"site": "x"}] * n, pa.struct([("site", pa.string())])),
        }
    )
    dict_texts = plain(3)
    shards["c-dict"] = pa.table(
        {
            "doc_id": [f"c{i}" for i in range(6)],
            "text": pa.array(dict_texts * 2).dictionary_encode(),
        }
    )
    shards["d-view"] = pa.table(
        {"doc_id": [f"d{i}" for i in range(4)], "text": pa.array(plain(4), pa.string_view())}
    )
    shards["e-number"] = pa.table({"doc_id": ["e0", "e1"], "text": pa.array([3, 4], pa.int64())})
    shards["f-list"] = pa.table(
        {"doc_id": ["f0", "f1"], "text": pa.array([["asthma"], []], pa.list_(pa.string()))}
    )
    shards["g-zero-rows"] = pa.table(
        {"doc_id": pa.array([], pa.string()), "text": pa.array([], pa.string())}
    )
    for name, table in shards.items():
        pq.write_table(table, inp / f"{name}.parquet")
    out = root / "out"
    oracle = tm.write_oracle_ner(root / "oracle")
    encoder = tm.write_random_encoder(root / "encoder")
    res = run_job(
        "--input", str(inp), "--output", str(out), "--ner-model", str(oracle),
        "--embed-model", str(encoder), "--docs-per-batch", "8",
    )  # fmt: skip
    return {"root": root, "out": str(out), "shards": shards, "res": res}


def _docs(bad_corpus) -> dict[tuple[str, str | None], list[dict]]:
    """Document rows by (shard name, doc_id), in input order."""
    by: dict[tuple[str, str | None], list[dict]] = {}
    out = bad_corpus["out"]
    for name in bad_corpus["shards"]:
        for r in read_table(out, f"documents/{name}.parquet").to_pylist():
            by.setdefault((name, r["doc_id"]), []).append(r)
    return by


def _input_texts(bad_corpus) -> dict[tuple[str, str], str]:
    """(shard name, doc_id) → text of the documents that should be processed (status ok).

    Entity rows carry no shard column: a doc_id repeated across shards is told apart
    only by the file its rows are in (``entities/<shard key>.parquet``)."""
    texts = {}
    for name, table in bad_corpus["shards"].items():
        if name in ("e-number", "f-list", "g-zero-rows"):
            continue
        col = table.column("text").combine_chunks()
        if name == "a-mixed":
            col = col.cast(pa.binary())
        for doc_id, t in zip(table.column("doc_id").to_pylist(), col.to_pylist()):
            if isinstance(t, bytes):
                try:
                    t = t.decode()
                except UnicodeDecodeError:
                    continue
            if doc_id and t and t.strip() and len(t) <= 1_000_000:
                texts.setdefault((name, doc_id), t)  # the first of a repeated id
    return texts


@pytest.mark.slow
def test_job_gives_every_bad_document_a_status_and_processes_the_rest(bad_corpus):
    out, shards = bad_corpus["out"], bad_corpus["shards"]
    # nothing lost: one documents row per input row, per shard, every shard committed
    for name, table in shards.items():
        assert read_table(out, f"documents/{name}.parquet").num_rows == table.num_rows, name
        assert (bad_corpus["root"] / "out" / "_commits" / f"{name}.json").exists(), name
    docs = _docs(bad_corpus)

    def one(shard: str, doc_id: str | None) -> dict:
        (row,) = docs[(shard, doc_id)]
        return row

    assert one("a-mixed", "m-null")["status"] == "empty"
    assert one("a-mixed", "m-null")["error"] == "text is null"
    assert one("a-mixed", "m-empty")["status"] == "empty"
    assert one("a-mixed", "m-space")["status"] == "empty"
    big = one("a-mixed", "m-big")
    assert big["status"] == "error" and big["n_chars"] == BIG and "--max-chars" in big["error"]
    assert big["n_chunks"] == 0 and big["embedding"] is None
    assert one("a-mixed", None)["error"] == one("a-mixed", "")["error"]
    assert one("a-mixed", None)["error"] == "doc_id is null or empty"
    first, repeat = docs[("a-mixed", "m-dup")]
    assert first["status"] == "ok" and repeat["status"] == "error"
    assert "row 4 " in repeat["error"]
    surrogate = one("a-mixed", "m-surrogate")
    assert surrogate["status"] == "error" and "invalid UTF-8" in surrogate["error"]
    for doc_id in SPECIAL:
        assert one("a-mixed", doc_id)["status"] == "ok", doc_id
        assert one("a-mixed", doc_id)["n_chars"] == len(SPECIAL[doc_id])
    for name, type_name in (("e-number", "int64"), ("f-list", "list<")):
        for r in read_table(out, f"documents/{name}.parquet").to_pylist():
            assert r["status"] == "error" and type_name in r["error"], r
            assert f"{name}.parquet" in r["error"]
    for name in ("b-large-extra", "c-dict", "d-view"):
        statuses = read_table(out, f"documents/{name}.parquet").column("status").to_pylist()
        assert statuses == ["ok"] * shards[name].num_rows, name
    assert read_table(out, "documents/g-zero-rows.parquet").num_rows == 0


@pytest.mark.slow
def test_job_entities_are_exact_in_every_script(bad_corpus):
    out = bad_corpus["out"]
    texts = _input_texts(bad_corpus)
    got = set()
    for name in bad_corpus["shards"]:
        for e in read_table(out, f"entities/{name}.parquet").to_pylist():
            key = (name, e["doc_id"])
            assert key in texts, e  # nothing from an error or empty document
            assert e["text"] == texts[key][e["start"] : e["end"]]
            got.add((name, e["doc_id"], e["start"], e["end"], e["label"]))

    def found(name: str, doc_id: str) -> set[tuple]:
        return {g[1:] for g in got if g[:2] == (name, doc_id)}

    for doc_id, text in SPECIAL.items():
        want = expected_entities(doc_id, text)
        assert want and found("a-mixed", doc_id) == want, doc_id
    # the repeat of m-dup was not processed: only the first text's entities
    want = expected_entities("m-dup", texts[("a-mixed", "m-dup")])
    assert want and found("a-mixed", "m-dup") == want
    emb = read_table(out, "embeddings")
    ok = [r for rows in _docs(bad_corpus).values() for r in rows if r["status"] == "ok"]
    assert emb.num_rows == sum(r["n_chunks"] for r in ok)
    vectors = np.array(emb.column("embedding").to_pylist(), np.float32)
    assert np.isfinite(vectors).all()


@pytest.mark.slow
def test_job_run_json_counts_statuses_and_reports_repeated_doc_ids(bad_corpus):
    res, out = bad_corpus["res"], bad_corpus["out"]
    assert res.returncode == 0, res.stderr[-3000:]
    run = read_run(out)
    assert run["shards"] == {"total": 7, "done": 7, "skipped": 0, "failed": 0}
    docs = _docs(bad_corpus)
    for status in ("ok", "empty", "error"):
        want = sum(1 for rows in docs.values() for r in rows if r["status"] == status)
        assert run["documents_by_status"].get(status, 0) == want, status
    # m-dup twice in a-mixed, x-dup in a-mixed and b-large-extra: both rows of each
    # stay (never merged), and run.json names the shards, never the ids.
    both = sorted(
        u for u in run["input_shards"] if u.endswith(("/a-mixed.parquet", "/b-large-extra.parquet"))
    )
    assert len(both) == 2
    assert run["duplicate_doc_ids"] == {"count": 2, "extra_rows": 2, "shards": both}
    assert "m-dup" not in json.dumps(run) and "x-dup" not in json.dumps(run)
    assert docs[("a-mixed", "x-dup")][0]["status"] == "ok"
    assert docs[("b-large-extra", "x-dup")][0]["status"] == "ok"


# ------------------------------------------- whole-input problems: before any work


@pytest.mark.slow
def test_a_prefix_without_parquet_files_stops_before_any_work(tmp_path):
    inp = tmp_path / "in"
    (inp / "_staging").mkdir(parents=True)
    (inp / "notes.csv").write_text("doc_id,text\n")
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["b"]}), inp / "_staging" / "x.parquet")
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["b"]}), inp / ".hidden.parquet")
    res = run_job("--input", str(inp), "--output", str(tmp_path / "out"), "--ner-model", "m")
    assert res.returncode == 2
    assert "no Parquet files" in res.stderr and str(inp) in res.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_a_missing_text_column_names_the_shard_and_column(tmp_path):
    inp = tmp_path / "in"
    inp.mkdir()
    pq.write_table(pa.table({"doc_id": ["a"], "text": ["b"]}), inp / "p0.parquet")
    pq.write_table(pa.table({"doc_id": ["a"], "body": ["b"]}), inp / "p1.parquet")
    res = run_job("--input", str(inp), "--output", str(tmp_path / "out"), "--ner-model", "m")
    assert res.returncode == 2
    assert "p1.parquet" in res.stderr and "p0.parquet" not in res.stderr
    assert "'text'" in res.stderr and "--text-column" in res.stderr
    res = run_job(
        "--input", str(inp), "--output", str(tmp_path / "out"), "--ner-model", "m",
        "--text-column", "note",
    )  # fmt: skip
    assert res.returncode == 2 and "'note'" in res.stderr and "p0.parquet" in res.stderr
    assert not (tmp_path / "out").exists()


def test_binary_ids_with_invalid_utf8_fail_only_their_row():
    ids = pa.array([b"a", wtf8("\ud800"), b"c"], pa.binary())
    rows = validate(ids, ["x", "y", "z"])
    assert [r["_status"] for r in rows] == ["ok", "error", "ok"]
    assert [r["doc_id"] for r in rows] == ["a", None, "c"]
    assert "invalid UTF-8" in rows[1]["_error"]


def test_an_all_null_text_column_of_type_null_is_empty_not_a_type_error():
    # pandas writes a column of only None with Arrow type null
    rows = validate(["a", "b"], pa.nulls(2))
    assert [(r["_status"], r["_error"]) for r in rows] == [("empty", "text is null")] * 2
