"""All file access: filesystems, shard listing, reading, staging and commit.

Every URI that fsspec understands works (local paths, ``file://``, ``s3://``).
S3-compatible stores are reached through the standard ``AWS_ENDPOINT_URL`` and the
standard AWS credential chain; nothing here takes keys as arguments.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator
from typing import Any

import fsspec
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pyarrow.parquet as pq
from fsspec.core import url_to_fs

# botocore's "standard" retries back off exponentially (with jitter, capped at 20 s a
# wait): 10 attempts ride out an object store that is down or restarting for tens of
# seconds, where the default (3 legacy attempts) fails within one or two.
S3_OPTIONS: dict[str, Any] = {
    "config_kwargs": {"retries": {"max_attempts": 10, "mode": "standard"}, "connect_timeout": 10}
}


def filesystem(uri: str) -> tuple[fsspec.AbstractFileSystem, str]:
    """The fsspec filesystem for ``uri`` and the path inside it (no protocol)."""
    # No listing cache: other processes (Ray workers) write into the folders this one
    # lists, and s3fs would otherwise answer ls/exists from a listing taken before.
    extra = S3_OPTIONS if uri.startswith(("s3://", "s3a://")) else {}
    fs, path = url_to_fs(uri, use_listings_cache=False, **extra)
    return fs, path.rstrip("/") if path not in ("/", "") else path


def join(uri: str, *parts: str) -> str:
    """Join path parts onto a URI, keeping its protocol."""
    if "://" in uri:
        proto, rest = uri.split("://", 1)
        return f"{proto}://" + posixpath.join(rest.rstrip("/"), *parts)
    return posixpath.join(uri, *parts)


def to_uri(fs: fsspec.AbstractFileSystem, path: str) -> str:
    """The full URI of ``path`` on ``fs`` (inverse of :func:`filesystem`)."""
    return fs.unstrip_protocol(path)


def exists(uri: str) -> bool:
    fs, path = filesystem(uri)
    return fs.exists(path)


def read_json(uri: str) -> Any:
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        return json.loads(f.read().decode("utf-8"))


def read_jsons(uris: list[str]) -> list[Any]:
    """Several JSON files of one filesystem, in order; fetched concurrently on object
    stores (one request each, in flight together)."""
    if not uris:
        return []
    fs, _ = filesystem(uris[0])
    paths = [filesystem(u)[1] for u in uris]
    data = fs.cat(paths)
    return [json.loads(data[p].decode("utf-8")) for p in paths]


def write_json(uri: str, obj: Any) -> None:
    """Write JSON in one object write (a single PUT on S3, so readers never see half)."""
    fs, path = filesystem(uri)
    data = json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8")
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        f.write(data)


def read_parquet_table(uri: str, columns: list[str] | None = None) -> pa.Table:
    """Read one Parquet file, or every Parquet file under a folder, as one table.

    Files and folders whose names start with ``_`` or ``.`` are skipped, as
    ``pyarrow.dataset`` does, so staging folders are never read.
    """
    fs, path = filesystem(uri)
    if fs.isdir(path):
        dataset = pads.dataset(path, format="parquet", filesystem=fs)
        return dataset.to_table(columns=columns)
    with fs.open(path, "rb") as f:
        return pq.read_table(f, columns=columns)


def write_parquet_table(uri: str, table: pa.Table, schema: pa.Schema | None = None) -> None:
    """Write ``table`` to one Parquet file, cast to ``schema`` when given."""
    fs, path = filesystem(uri)
    if schema is not None:
        table = table.select(schema.names).cast(schema)
    fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(table, f, compression="zstd")


def parquet_shard_versions(uri: str) -> dict[str, str]:
    """Every ``.parquet`` file at or under ``uri``, as full URIs, with its version from the
    listing alone: its size and what the store changes when the file is written again
    (S3's ETag, GCS's generation, else the modification time).

    Hidden and ``_``-prefixed files and folders are skipped, as readers do.
    """
    fs, path = filesystem(uri)
    if fs.isfile(path):
        return {to_uri(fs, path): _version(fs.info(path))}
    if not fs.exists(path):
        raise FileNotFoundError(f"input not found: {uri}")
    found = {}
    for p, info in fs.find(path, detail=True).items():
        rel = p[len(path) :].lstrip("/")
        if any(part.startswith(("_", ".")) for part in rel.split("/")):
            continue
        if p.endswith(".parquet"):
            found[to_uri(fs, p)] = _version(info)
    return found


def _version(info: dict[str, Any]) -> str:
    for key in ("ETag", "etag", "generation", "md5Hash", "mtime", "LastModified"):
        if info.get(key) is not None:
            return f"size={info.get('size')} {key}={info[key]}"
    return f"size={info.get('size')}"


def parquet_metadata(uri: str) -> tuple[int, pa.Schema]:
    """Row count and Arrow schema of one Parquet file, from its footer only."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        return pf.metadata.num_rows, pf.schema_arrow


def parquet_schema(uri: str) -> pa.Schema:
    """The Arrow schema of one Parquet file or of every Parquet file under a folder (as
    ``read_parquet_table`` reads them), from the footers only."""
    fs, path = filesystem(uri)
    if fs.isdir(path):
        return pads.dataset(path, format="parquet", filesystem=fs).schema
    return parquet_metadata(uri)[1]


def iter_parquet_batches(uri: str, columns: list[str], batch_size: int) -> Iterator[pa.Table]:
    """Stream ``columns`` of one Parquet file in tables of at most ``batch_size`` rows."""
    fs, path = filesystem(uri)
    with fs.open(path, "rb") as f:
        pf = pq.ParquetFile(f)
        for batch in pf.iter_batches(batch_size=batch_size, columns=columns):
            yield pa.Table.from_batches([batch])


def remove(uri: str, recursive: bool = False) -> None:
    """Delete a file or (with ``recursive``) a folder; a missing path is not an error."""
    fs, path = filesystem(uri)
    if fs.exists(path):
        fs.rm(path, recursive=recursive)


def remove_files(uris: list[str]) -> None:
    """Delete the given files of one filesystem in one call (a bulk delete on S3)."""
    if not uris:
        return
    fs, _ = filesystem(uris[0])
    fs.rm([filesystem(u)[1] for u in uris])


def list_files(uri: str) -> list[str]:
    """Full URIs of the files under ``uri``, or of ``uri`` itself if it is a file (empty
    if missing). Folder markers that object stores keep for empty "directories" are not
    files."""
    fs, path = filesystem(uri)
    if not fs.exists(path):
        return []
    if fs.isfile(path):
        return [to_uri(fs, path)]
    found = fs.find(path, detail=True)
    return sorted(
        to_uri(fs, p)
        for p, info in found.items()
        if info.get("type") == "file" and p.rstrip("/") != path.rstrip("/")
    )


def upload_folder(local_dir: str, uri: str) -> None:
    """Copy every file under the local folder ``local_dir`` to the folder ``uri`` (local or
    remote), keeping relative paths; files already there with other names stay."""
    fs, path = filesystem(uri)
    fs.makedirs(path, exist_ok=True)
    fs.put(local_dir.rstrip("/") + "/", path, recursive=True)


def move(src_uri: str, dst_uri: str) -> None:
    """Move a file or folder within one filesystem (a rename locally; copy then delete
    on object stores)."""
    fs, src = filesystem(src_uri)
    _, dst = filesystem(dst_uri)
    fs.makedirs(posixpath.dirname(dst), exist_ok=True)
    fs.mv(src, dst, recursive=True)


def doc_id_columns(documents_uri: str) -> Iterator[tuple[str, pa.Array]]:
    """Each file of a documents table, one file in memory at a time: its key (the file
    name without ``.parquet``) and its doc_ids, null and empty ones left out (their rows
    are errors already, and are not one document written twice)."""
    fs, path = filesystem(documents_uri)
    if not fs.exists(path):
        return
    for fragment in pads.dataset(path, format="parquet", filesystem=fs).get_fragments():
        ids = fragment.to_table(columns=["doc_id"]).column("doc_id").combine_chunks()
        key = posixpath.basename(fragment.path).removesuffix(".parquet")
        if pa.types.is_string(ids.type):
            yield key, ids.filter(pc.not_equal(ids, ""))  # a null compares null: dropped too
        else:  # integer ids
            yield key, ids.drop_null()
