"""pipeline.storage.files against a real S3 server (SeaweedFS), reached only through the
standard AWS environment that the ``s3_env`` fixture sets."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from support.s3_server import SeaweedS3

from pipeline import schemas
from pipeline.storage import files as storage


def _entities(n: int, first: int = 0) -> pa.Table:
    """``n`` hand-made entity rows, columns in a different order than the schema, plus one
    extra column, so that writing with the schema has something to select and cast."""
    ids = range(first, first + n)
    return pa.table(
        {
            "extra": [0] * n,
            schemas.SCORE: pa.array([i / 100 for i in ids], pa.float64()),
            schemas.DOC_ID: [f"doc-{i:04d}" for i in ids],
            schemas.START: pa.array(ids, pa.int64()),
            schemas.END: pa.array([i + 5 for i in ids], pa.int64()),
            schemas.TEXT: ["ab\u00e9cd"] * n,
            schemas.LABEL: ["Disease", "Chemical"] * (n // 2) + ["Gene"] * (n % 2),
            **{c: ["x"] * n for c in schemas.CONTEXT_COLUMNS},
        }
    )


def _key(server: SeaweedS3, uri: str) -> str:
    """The object key of ``uri`` inside the test bucket."""
    prefix = f"s3://{server.bucket}/"
    assert uri.startswith(prefix)
    return uri[len(prefix) :]


def _parquet_bytes(table: pa.Table) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_parquet_file_round_trip(s3_env: str, s3_server: SeaweedS3) -> None:
    uri = storage.join(s3_env, "entities", "part-00000.parquet")
    table = _entities(7)
    storage.write_parquet_table(uri, table, schema=schemas.entity_schema())

    # The object is on the test server, seen by a client that shares nothing with fsspec.
    head = s3_server.client().head_object(Bucket=s3_server.bucket, Key=_key(s3_server, uri))
    assert head["ContentLength"] > 0

    got = storage.read_parquet_table(uri)
    assert got.schema.equals(schemas.entity_schema())
    assert got.column(schemas.DOC_ID).to_pylist() == table.column(schemas.DOC_ID).to_pylist()
    assert got.column(schemas.START).to_pylist() == list(range(7))
    assert got.column(schemas.TEXT).to_pylist() == ["ab\u00e9cd"] * 7

    only_ids = storage.read_parquet_table(uri, columns=[schemas.DOC_ID])
    assert only_ids.column_names == [schemas.DOC_ID]


def test_parquet_folder_round_trip_skips_staging(s3_env: str) -> None:
    folder = storage.join(s3_env, "entities")
    parts = [_entities(4, first=10 * i) for i in range(3)]
    for i, part in enumerate(parts):
        storage.write_parquet_table(storage.join(folder, f"part-{i:05d}.parquet"), part)
    # An unfinished write in the staging folder must never be read as output.
    staged = _entities(5, first=900)
    storage.write_parquet_table(storage.join(folder, "_staging", "part-00009.parquet"), staged)

    got = storage.read_parquet_table(folder)
    expected_ids = sorted(i for part in parts for i in part.column(schemas.DOC_ID).to_pylist())
    assert sorted(got.column(schemas.DOC_ID).to_pylist()) == expected_ids
    assert got.num_rows == 12


def test_json_round_trip_and_exists(s3_env: str) -> None:
    uri = storage.join(s3_env, "run", "manifest.json")
    obj = {"counts": {"documents": 3, "entities": 11}, "model": "tiny-bert", "labels": ["a"]}
    assert not storage.exists(uri)

    storage.write_json(uri, obj)

    assert storage.exists(uri)
    assert storage.read_json(uri) == obj
    assert not storage.exists(storage.join(s3_env, "run", "other.json"))


def test_listing_sees_objects_written_by_another_client(s3_env: str, s3_server: SeaweedS3) -> None:
    """A driver that listed a folder must still see what workers (other processes, here a
    separate client) write there afterwards: no stale listing cache."""
    folder = storage.join(s3_env, "out")
    storage.write_parquet_table(storage.join(folder, "part-00000.parquet"), _entities(3))
    assert storage.read_parquet_table(folder).num_rows == 3
    marker = storage.join(folder, "_SUCCESS")
    assert not storage.exists(marker)

    client = s3_server.client()
    client.put_object(
        Bucket=s3_server.bucket,
        Key=_key(s3_server, storage.join(folder, "part-00001.parquet")),
        Body=_parquet_bytes(_entities(4, first=100)),
    )
    client.put_object(Bucket=s3_server.bucket, Key=_key(s3_server, marker), Body=b"")

    fs, path = storage.filesystem(folder)
    names = {name.rsplit("/", 1)[-1] for name in fs.ls(path)}
    assert {"part-00000.parquet", "part-00001.parquet", "_SUCCESS"} <= names
    assert storage.exists(marker)
    assert storage.read_parquet_table(folder).num_rows == 7


@pytest.mark.parametrize("name", ["a.parquet", "nested/b.parquet"])
def test_written_file_is_visible_at_once(s3_env: str, name: str) -> None:
    """Listing through the same filesystem right after a write includes the new file."""
    uri = storage.join(s3_env, name)
    fs, parent = storage.filesystem(storage.join(s3_env))
    assert fs.find(parent) == []
    storage.write_parquet_table(uri, _entities(2))
    assert [p.rsplit("/", 1)[-1] for p in fs.find(parent)] == [name.rsplit("/", 1)[-1]]


def test_an_overwrite_is_promoted_on_s3_with_nothing_old_left(s3_env: str) -> None:
    """The file-by-file swap on a real object store: bulk delete of the old files,
    copy-and-delete moves, single files (run.json) listed like folders."""
    from support.outputs import assert_only_new, old_and_new

    from pipeline.storage.output import OutputFolder

    old_and_new(s3_env)
    OutputFolder(s3_env).promote_next()
    assert_only_new(s3_env, folders_too=False)


def test_a_shard_rewritten_on_s3_gets_another_version(s3_env: str) -> None:
    """Same size, other bytes: the store's ETag tells them apart; an untouched file
    keeps its version between listings."""
    a, b = storage.join(s3_env, "in", "a.parquet"), storage.join(s3_env, "in", "b.parquet")
    storage.write_parquet_table(a, pa.table({"doc_id": ["1"], "text": ["x"]}))
    storage.write_parquet_table(b, pa.table({"doc_id": ["2"], "text": ["y"]}))
    first = storage.parquet_shard_versions(storage.join(s3_env, "in"))
    assert sorted(first) == [a, b] and all("ETag" in v or "etag" in v for v in first.values())
    storage.write_parquet_table(a, pa.table({"doc_id": ["1"], "text": ["z"]}))
    second = storage.parquet_shard_versions(storage.join(s3_env, "in"))
    assert second[b] == first[b] and second[a] != first[a]
    assert second[a].split()[0] == first[a].split()[0]  # the same size
