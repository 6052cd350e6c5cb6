"""Exactly-once bookkeeping on a local folder: shard keys, publishing, overwrite
generations and their crash recovery, duplicate ids."""

from __future__ import annotations

import dataclasses
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.outputs import assert_only_new, old_and_new

from pipeline import schemas as S
from pipeline.config import AnnotateConfig
from pipeline.execution import plan
from pipeline.storage import files as storage
from pipeline.storage import output
from pipeline.storage.output import OutputFolder
from pipeline.storage.shards import StagedParts, shard_key
from pipeline.types import InputError, RunPlan, Shard


def test_shard_keys_derive_from_the_path_under_the_input():
    assert shard_key("s3://b/in/2024/p-1.parquet", "s3://b/in/") == "2024__p-1"
    assert shard_key("file:///data/in/x.parquet", "/data/in") == "x"
    assert shard_key("/data/one.parquet", "/data/one.parquet") == "one"
    long = shard_key("/in/" + "a" * 300 + ".parquet", "/in")
    assert len(long) <= 120 and long != shard_key("/in/" + "a" * 299 + ".parquet", "/in")
    assert shard_key("/in/train_docs.v2.parquet", "/in") == "train_docs.v2"


def test_shard_keys_are_unique_visible_and_safe_for_any_names():
    """Names the key cannot spell (other scripts, spaces, "__", leading dots) used to
    share keys (refused as a collision) or give hidden files (skipped by readers)."""
    import random

    rng = random.Random(5)
    alphabet = ["a", "b", "_", "__", ".", "/", " ", "-", "é", "数据", "文档", "(", "="]
    names = {"数据", "文档", "a b", "a__b", "a/b", "x_", "x", "é.v2", "(.old)", ".v2", "a_/b"}
    names |= {"".join(rng.choices(alphabet, k=rng.randint(1, 8))) for _ in range(3000)}
    names = {n for n in names if n.strip("/") == n and "//" not in n}  # real file paths
    keys = {n: shard_key(f"/in/{n}.parquet", "/in") for n in names}
    assert len(set(keys.values())) == len(keys)
    for name, key in keys.items():
        assert re.fullmatch(r"[A-Za-z0-9._=-]+", key) and len(key) <= 120, (name, key)
        assert not key.startswith("."), (name, key)  # hidden: pyarrow's readers skip it


def _part(first: int, n: int) -> str:
    """A staged part's file name, as the writer names it (first and last row)."""
    return f"r{first:012d}-{first + n - 1:012d}.parquet"


def _stage(out, key, first, ids):
    part = _part(first, len(ids))
    docs = pa.table(
        {
            S.DOC_ID: ids,
            S.N_CHARS: [1] * len(ids),
            S.N_TOKENS: [1] * len(ids),
            S.N_CHUNKS: pa.array([0] * len(ids), pa.int32()),
            S.STATUS: ["ok"] * len(ids),
            S.ERROR: pa.array([None] * len(ids), pa.string()),
            S.EMBEDDING: pa.nulls(len(ids), pa.list_(pa.float32())),
        }
    )
    storage.write_parquet_table(
        storage.join(out, "_staging", key, S.DOCUMENTS_DIR, part), docs, S.document_schema(None)
    )


def _stage_no_entities(out, key, part):
    path = storage.join(out, "_staging", key, S.ENTITIES_DIR, part)
    storage.write_parquet_table(path, S.entity_schema().empty_table())


def test_publish_merges_parts_in_row_order_and_is_idempotent(tmp_path):
    out = str(tmp_path / "out")
    schemas = {S.DOCUMENTS_DIR: S.document_schema(None), S.ENTITIES_DIR: S.entity_schema()}
    _stage(out, "k", 10, ["c", "d"])
    _stage(out, "k", 0, ["a", "b"])
    parts = [_part(0, 2), _part(10, 2)]
    for p in parts:  # batches without entities still stage an (empty) entities part
        _stage_no_entities(out, "k", p)
    record = OutputFolder(out).publish("k", "/in/k.parquet", schemas, {"fingerprint": "f"}, parts)
    table = pq.read_table(tmp_path / "out" / "documents" / "k.parquet")
    assert table.column("doc_id").to_pylist() == ["a", "b", "c", "d"]
    assert record["rows"] == {"documents": 4, "entities": 0}
    assert record["statuses"] == {"ok": 4}
    assert OutputFolder(out).committed_keys() == {"k"}
    assert not (tmp_path / "out" / "_staging" / "k").exists()
    # an empty entities file is still written, so readers always find the schema
    assert pq.read_table(tmp_path / "out" / "entities" / "k.parquet").num_rows == 0
    # publishing the same shard again (a retried commit) overwrites, never duplicates
    _stage(out, "k", 0, ["a", "b", "c", "d"])
    _stage_no_entities(out, "k", _part(0, 4))
    OutputFolder(out).publish("k", "/in/k.parquet", schemas, {"fingerprint": "f"}, [_part(0, 4)])
    assert storage.read_parquet_table(storage.join(out, "documents")).num_rows == 4


def test_parts_a_dead_run_cut_at_other_rows_are_not_published(tmp_path):
    """A run killed after staging rows 0-2 in one batch, rerun with batches of two: only
    the rerun's parts are merged, so no row is repeated."""
    out = str(tmp_path / "out")
    schemas = {S.DOCUMENTS_DIR: S.document_schema(None)}
    _stage(out, "k", 0, ["a", "b", "c"])  # the dead run's part
    _stage(out, "k", 0, ["a", "b"])
    _stage(out, "k", 2, ["c", "d"])
    record = OutputFolder(out).publish(
        "k", "/in/k.parquet", schemas, {}, [_part(0, 2), _part(2, 2)]
    )
    table = pq.read_table(tmp_path / "out" / "documents" / "k.parquet")
    assert table.column("doc_id").to_pylist() == ["a", "b", "c", "d"]
    assert record["rows"] == {"documents": 4}
    assert not (tmp_path / "out" / "_staging" / "k").exists()


def test_a_retried_publish_of_this_run_keeps_the_committed_rows(tmp_path):
    """Ray retries a publish whose worker died after it returned, or whose staging
    cleanup failed half-way: the retry must not merge the few parts left in staging
    over the committed table."""
    out = str(tmp_path / "out")
    schemas = {S.DOCUMENTS_DIR: S.document_schema(None)}
    _stage(out, "k", 0, ["a", "b"])
    _stage(out, "k", 2, ["c", "d"])
    parts, meta = [_part(0, 2), _part(2, 2)], {"fingerprint": "f", "run": "r1"}
    first = OutputFolder(out).publish("k", "/in/k.parquet", schemas, meta, parts)
    _stage(out, "k", 2, ["c", "d"])  # staging only partly removed by the first attempt
    again = OutputFolder(out).publish("k", "/in/k.parquet", schemas, meta, parts)
    assert again == first and first["rows"] == {"documents": 4}
    docs = storage.read_parquet_table(storage.join(out, "documents"))
    assert docs.column("doc_id").to_pylist() == ["a", "b", "c", "d"]
    assert not (tmp_path / "out" / "_staging" / "k").exists()


def test_a_shard_with_a_staged_part_missing_is_not_committed(tmp_path):
    out = str(tmp_path / "out")
    schemas = {S.DOCUMENTS_DIR: S.document_schema(None)}
    _stage(out, "k", 0, ["a", "b"])
    with pytest.raises(RuntimeError, match="1 of 2 staged documents parts are missing"):
        OutputFolder(out).publish("k", "/in/k.parquet", schemas, {}, [_part(0, 2), _part(2, 2)])
    assert OutputFolder(out).committed_keys() == set()
    assert not (tmp_path / "out" / "documents").exists()
    assert (tmp_path / "out" / "_staging" / "k").exists()  # kept for a look; a rerun redoes it


def _cfg(tmp_path, mode="resume"):
    return AnnotateConfig(input_uri="/in", output_uri=str(tmp_path / "out"), mode=mode)


def _work_output(cfg: AnnotateConfig, fingerprint: str) -> str:
    return OutputFolder.for_run(cfg.output_uri, cfg.mode, fingerprint).uri


def _fake_output(root, fp, marker):
    """An output folder whose files all carry ``marker``."""
    storage.write_json(storage.join(root, "_manifest.json"), {"fingerprint": fp})
    storage.write_json(storage.join(root, "run.json"), {"marker": marker})
    storage.write_parquet_table(
        storage.join(root, "documents", "k.parquet"), pa.table({"x": [marker]})
    )


def test_resume_into_another_configuration_is_refused(tmp_path):
    _fake_output(str(tmp_path / "out"), "old", "old")
    with pytest.raises(InputError, match="another configuration"):
        _work_output(_cfg(tmp_path), "new")
    assert _work_output(_cfg(tmp_path), "old") == str(tmp_path / "out")


def test_overwrite_keeps_the_old_output_until_the_new_one_is_promoted(tmp_path):
    out = str(tmp_path / "out")
    _fake_output(out, "old", "old")
    work = _work_output(_cfg(tmp_path, "overwrite"), "new")
    assert work == storage.join(out, "_next")
    _fake_output(work, "new", "new")
    # not promoted yet: readers still see the old, complete output
    assert storage.read_json(storage.join(out, "run.json"))["marker"] == "old"
    assert storage.read_parquet_table(storage.join(out, "documents")).column("x").to_pylist() == [
        "old"
    ]
    OutputFolder(out).promote_next()
    assert storage.read_json(storage.join(out, "run.json"))["marker"] == "new"
    assert storage.read_json(storage.join(out, "_manifest.json"))["fingerprint"] == "new"
    assert storage.read_parquet_table(storage.join(out, "documents")).column("x").to_pylist() == [
        "new"
    ]
    assert not storage.exists(storage.join(out, "_next"))


def test_a_promotion_an_older_version_cut_short_is_finished_by_the_next_run(tmp_path):
    out = str(tmp_path / "out")
    _fake_output(out, "old", "old")
    nxt = storage.join(out, "_next")
    _fake_output(nxt, "new", "new")
    storage.write_json(storage.join(nxt, output.PROMOTING), {})
    # crash after the old documents were replaced but before run.json moved
    storage.remove(storage.join(out, "documents"), recursive=True)
    storage.move(storage.join(nxt, "documents"), storage.join(out, "documents"))
    # the next run (any mode) finishes the swap before deciding where to write
    assert _work_output(_cfg(tmp_path), "new") == out
    assert storage.read_json(storage.join(out, "run.json"))["marker"] == "new"
    assert not storage.exists(nxt)


def test_a_promotion_leaves_nothing_of_the_old_output(tmp_path):
    out = str(tmp_path / "out")
    old_and_new(out)
    OutputFolder(out).promote_next()
    assert_only_new(out)


class _Crash(Exception):
    pass


# every step: 3 folders the new generation lacks, 2 old shard files, 8 files moved in 2
# steps each, the removal of _next
@pytest.mark.parametrize("crash_at", range(22))
def test_a_promotion_cut_short_anywhere_is_finished_by_the_next_run(
    tmp_path, monkeypatch, crash_at
):
    """Moves as object stores make them (copy, then delete): the job dies at the
    ``crash_at``-th storage step of the swap, possibly between a file's copy and its
    delete; the next run of the job must end with the new generation, whole, alone."""
    out = str(tmp_path / "out")
    old_and_new(out)
    steps = iter(range(100))
    real_move, real_remove, real_remove_files = storage.move, storage.remove, storage.remove_files

    def step() -> None:
        if next(steps) == crash_at:
            raise _Crash

    def s3_move(src: str, dst: str) -> None:
        step()
        storage.write_json(dst, storage.read_json(src)) if src.endswith(".json") else (
            storage.write_parquet_table(dst, storage.read_parquet_table(src))
        )
        step()
        real_remove(src)

    def remove(uri: str, recursive: bool = False) -> None:
        step()
        real_remove(uri, recursive)

    def remove_files(uris: list[str]) -> None:
        for u in uris:
            step()
            real_remove_files([u])

    monkeypatch.setattr(storage, "move", s3_move)
    monkeypatch.setattr(storage, "remove", remove)
    monkeypatch.setattr(storage, "remove_files", remove_files)
    with pytest.raises(_Crash):
        OutputFolder(out).promote_next()
    monkeypatch.setattr(storage, "move", real_move)
    monkeypatch.setattr(storage, "remove", real_remove)
    monkeypatch.setattr(storage, "remove_files", real_remove_files)
    assert _work_output(_cfg(tmp_path), "new") == out  # any mode finishes the swap
    assert_only_new(out)


def test_an_unfinished_overwrite_of_another_configuration_is_discarded(tmp_path):
    out = str(tmp_path / "out")
    _fake_output(out, "old", "old")
    _fake_output(storage.join(out, "_next"), "abandoned", "x")
    cfg = dataclasses.replace(_cfg(tmp_path), mode="overwrite")
    work = _work_output(cfg, "new")
    assert not storage.exists(storage.join(work, "run.json"))


def test_staged_parts_complete_each_shard_once_and_forget_it():
    staged = StagedParts({"s1": 5, "s2": 3})
    assert staged.add("s1", "p0", 2) == (True, None)
    assert staged.add("s2", "q0", 3) == (True, ["q0"])  # interleaved; one part is all of s2
    assert staged.add("s1", "p0", 2) == (False, None)  # a batch Ray ran again: counted once
    assert staged.staged_docs("s1") == 2 and staged.in_flight() == 1
    assert staged.add("s1", "p1", 3) == (True, ["p0", "p1"])
    # a late repeat of a part of a complete shard publishes nothing again
    assert staged.add("s1", "p1", 3) == (False, None)
    assert staged.add("s2", "q0", 3) == (False, None)
    assert staged.in_flight() == 0


def test_staged_parts_hold_only_the_shards_in_flight():
    n_shards, parts_per_shard = 300, 40
    staged = StagedParts({f"s{k}": parts_per_shard for k in range(n_shards)})
    done, most = 0, 0
    # two shards in flight at a time, their parts interleaved, one document a part
    for k in range(0, n_shards, 2):
        for i in range(parts_per_shard):
            for shard in (f"s{k}", f"s{k + 1}"):
                new, parts = staged.add(shard, f"{shard}-p{i}", 1)
                assert new
                done += parts is not None
                most = max(most, staged.in_flight())
    assert done == n_shards
    assert most <= 2 * parts_per_shard and staged.in_flight() == 0


def _plan_over(tmp_path, shards: dict[str, list[str]]) -> RunPlan:
    """A plan over real Parquet shards (no models: only the shards matter here)."""
    inp = tmp_path / "in"
    inp.mkdir(exist_ok=True)
    for name, ids in shards.items():
        pq.write_table(pa.table({"doc_id": ids, "text": ids}), inp / f"{name}.parquet")
    versions = storage.parquet_shard_versions(str(inp))
    found = [
        Shard(
            u,
            shard_key(u, str(inp)),
            pq.read_metadata(u.removeprefix("file://")).num_rows,
            v,
        )
        for u, v in sorted(versions.items())
    ]
    return RunPlan({}, {}, found, list(found), [])


def _commit(out: str, s: Shard) -> None:
    record = {"shard": s.uri, "key": s.key, "rows": {"documents": s.n_rows}}
    storage.write_json(
        OutputFolder(out).commit_record(s.key), record | {"input_version": s.version}
    )


def test_a_shard_written_again_since_its_commit_is_done_again(tmp_path):
    import os

    out = str(tmp_path / "out")
    rp = _plan_over(tmp_path, {"a": ["1", "2"], "b": ["3"], "c": ["4"]})
    for s in rp.shards:
        _commit(out, s)
    plan.skip_committed(rp, OutputFolder(out))
    assert [s.key for s in rp.skipped] == ["a", "b", "c"] and rp.todo == []
    assert rp.committed["a"]["rows"] == {"documents": 2}  # the report reuses the records
    # b: one row more; c: rewritten with the same size (another id of the same length),
    # as a job upstream regenerating its output would
    pq.write_table(
        pa.table({"doc_id": ["3", "5"], "text": ["3", "5"]}), tmp_path / "in" / "b.parquet"
    )
    c = tmp_path / "in" / "c.parquet"
    before = c.stat()
    pq.write_table(pa.table({"doc_id": ["7"], "text": ["7"]}), c)
    os.utime(c, ns=(before.st_atime_ns, before.st_mtime_ns + 10**9))  # clocks are coarse
    assert c.stat().st_size == before.st_size
    rp = _plan_over(tmp_path, {})
    plan.skip_committed(rp, OutputFolder(out))
    assert [s.key for s in rp.skipped] == ["a"]
    assert [s.key for s in rp.todo] == ["b", "c"]


def test_failure_records_of_earlier_runs_are_forgotten_for_the_shards_redone(tmp_path):
    out = str(tmp_path / "out")
    for key in ("a", "b", "c"):
        OutputFolder(out).record_failure(key, f"/in/{key}.parquet", OSError("gone"))
    OutputFolder(out).forget_failures({"a", "c", "zz"})
    assert OutputFolder(out).failure("a") is None and OutputFolder(out).failure("c") is None
    assert OutputFolder(out).failure("b") == "OSError: gone"


def test_json_files_are_read_together_in_order(tmp_path):
    uris = [str(tmp_path / f"{i}.json") for i in (3, 1, 2)]
    for i, u in enumerate(uris):
        storage.write_json(u, {"i": i})
    assert storage.read_jsons(uris) == [{"i": 0}, {"i": 1}, {"i": 2}]
    assert storage.read_jsons([]) == []


def test_rows_of_shards_gone_from_the_input_are_still_counted(tmp_path):
    """The tables keep what earlier runs committed from a shard since removed or renamed;
    run.json's row counts are the tables' and say which shards those rows came from."""
    from pipeline.execution.report import table_counts
    from pipeline.types import RunResult

    out = str(tmp_path / "out")
    rp = _plan_over(tmp_path, {"a": ["1", "2"], "b": ["3"]})
    for s in rp.shards:
        _commit(out, s)
    (tmp_path / "in" / "a.parquet").unlink()
    rp = _plan_over(tmp_path, {})
    plan.skip_committed(rp, OutputFolder(out))
    assert [s.key for s in rp.skipped] == ["b"] and list(rp.earlier) == ["a"]
    assert table_counts(rp, RunResult())["rows"] == {"documents": 3}
