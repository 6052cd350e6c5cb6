"""Exactly-once output: shard keys, publishing a staged shard, and commit records.

A shard's rows become visible together: each table's staged parts are merged into
one file per table named after the shard (``<table>/<key>.parquet``), so a retry
overwrites rather than duplicates, and the commit record
``_commits/<key>.json`` is written last. A shard with a commit record is done; a
rerun skips it. Object stores have no atomic folder rename; one file per table
and a record written after them gives the same guarantee there.
"""

from __future__ import annotations

import hashlib
import posixpath
import re
from collections.abc import Collection
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline import storage

TABLES = (S.DOCUMENTS_DIR, S.ENTITIES_DIR, S.EMBEDDINGS_DIR)


def shard_key(shard_uri: str, input_uri: str) -> str:
    """A file-name-safe key for a shard, derived from its path under the input root,
    so the same input always maps to the same output names."""
    root = storage.filesystem(input_uri)[1].rstrip("/")
    path = storage.filesystem(shard_uri)[1]
    rel = path[len(root) :].lstrip("/") if path.startswith(root + "/") else ""
    rel = rel or posixpath.basename(path)
    stem = rel.removesuffix(".parquet")
    readable = stem.replace("/", "__")  # two paths of the _READABLE form never share one
    if _READABLE.fullmatch(stem) and len(readable) <= 120:
        return readable
    safe = re.sub(r"[^A-Za-z0-9._=-]+", "__", stem).strip("_.")  # "." first: a hidden file
    # Names the key cannot spell out (spaces, other scripts, "__", very long) keep a hash
    # of the real path, so two shards never share a key.
    return (safe[:100] or "shard") + "-" + hashlib.sha1(stem.encode()).hexdigest()[:12]


# Path parts of letters, digits and ._=-, none starting with "." or "_", ending with
# "_" or holding "__": joined by "__" they are one key each, read back unambiguously.
_PART = r"(?![._])(?:(?!__)[A-Za-z0-9._=-])*(?<!_)"
_READABLE = re.compile(rf"{_PART}(?:/{_PART})*")


def commit_path(output_uri: str, key: str) -> str:
    return storage.join(output_uri, "_commits", f"{key}.json")


def committed_keys(output_uri: str) -> set[str]:
    """Keys of the shards whose commit record exists."""
    files = storage.list_files(storage.join(output_uri, "_commits"))
    return {posixpath.basename(f).removesuffix(".json") for f in files if f.endswith(".json")}


def publish_shard(
    output_uri: str,
    key: str,
    shard_uri: str,
    schemas: dict[str, pa.Schema],
    meta: dict[str, Any],
    parts: Collection[str],
) -> dict[str, Any]:
    """Merge a shard's staged ``parts`` (file names) into its final files, then write its
    commit record.

    Only the named parts are read: a run that died may have left parts cut at other row
    boundaries (another batch size), which would repeat rows. Parts are concatenated in
    row order (their names start with the first row index). Returns the commit record
    (row counts per table).

    Safe to retry: when this run (``meta["run"]``) already wrote the record, the record
    is returned as it stands; and a part missing from staging fails the call before any
    table is written, so a shard is never committed with fewer rows than were staged.
    """
    staging = storage.join(output_uri, "_staging", key)
    record_uri = commit_path(output_uri, key)
    if "run" in meta and storage.exists(record_uri):
        done = storage.read_json(record_uri)
        if done.get("run") == meta["run"] and done.get("shard") == shard_uri:
            storage.remove(staging, recursive=True)  # what the first attempt left to do
            return done
    wanted = set(parts)
    found: dict[str, list[str]] = {}
    for table_name in schemas:
        files = storage.list_files(storage.join(staging, table_name))
        found[table_name] = [p for p in files if posixpath.basename(p) in wanted]
        if len(found[table_name]) != len(wanted):
            # The writer reports a part once it is written to every table of the run.
            raise RuntimeError(
                f"shard {key}: {len(wanted) - len(found[table_name])} of {len(wanted)} "
                f"staged {table_name} parts are missing; the shard stays uncommitted and a "
                "rerun redoes it"
            )
    counts: dict[str, int] = {}
    tallies: dict[str, dict[str, int]] = {}
    for table_name, schema in schemas.items():
        tables = [storage.read_parquet_table(p) for p in sorted(found[table_name])]
        merged = pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()
        storage.write_parquet_table(
            storage.join(output_uri, table_name, f"{key}.parquet"), merged, schema
        )
        counts[table_name] = merged.num_rows
        column = {S.ENTITIES_DIR: S.LABEL, S.DOCUMENTS_DIR: S.STATUS}.get(table_name)
        if column:
            tallies[column] = {
                str(v["values"]): int(v["counts"])
                for v in pc.value_counts(merged.column(column)).to_pylist()
            }
    record = {
        "shard": shard_uri,
        "key": key,
        "rows": counts,
        "labels": tallies.get(S.LABEL, {}),
        "statuses": tallies.get(S.STATUS, {}),
        **meta,
    }
    storage.write_json(record_uri, record)
    storage.remove(staging, recursive=True)
    return record


# An overwrite runs into this generation folder; the previous output stays whole
# until the new one is complete, then the generation is promoted.
NEXT = "_next"
PROMOTING = "_PROMOTING"
PUBLIC_ITEMS = (*TABLES, "_commits", "_manifest.json", S.RUN_JSON)
# What an old output may hold that the new generation replaces or drops.
REPLACED_ITEMS = (*PUBLIC_ITEMS, "_failures", "_staging")


def next_generation(output_uri: str) -> str:
    return storage.join(output_uri, NEXT)


def _files_under(root: str, items: Collection[str]) -> list[str]:
    """Paths relative to ``root`` of the files of ``items`` (folders or files) under it."""
    base = storage.filesystem(root)[1].rstrip("/") + "/"
    paths = [
        storage.filesystem(f)[1]
        for item in items
        for f in storage.list_files(storage.join(root, item))
    ]
    return [p[len(base) :] for p in paths if p.startswith(base)]


def promote_next(output_uri: str) -> None:
    """Replace the output's tables with the completed ``_next`` generation.

    Object stores cannot swap folders, and move a folder by copying then deleting file
    by file, so the swap goes file by file from a list written first (the marker): a
    crash at any point is finished by the next run (:func:`finish_promotion`), which
    can always tell an old file from a new one, and old files are only removed once the
    new generation is complete.
    """
    nxt = next_generation(output_uri)
    files = sorted(_files_under(nxt, PUBLIC_ITEMS))
    storage.write_json(storage.join(nxt, PROMOTING), {"promoting_into": output_uri, "files": files})
    finish_promotion(output_uri)


def finish_promotion(output_uri: str) -> bool:
    """Complete a promotion that was started; returns whether there was one."""
    nxt = next_generation(output_uri)
    marker = storage.join(nxt, PROMOTING)
    if not storage.exists(marker):
        return False
    files = storage.read_json(marker).get("files")
    if files is None:  # a marker of an older version: it replaced whole items
        for item in PUBLIC_ITEMS:
            if storage.exists(storage.join(nxt, item)):
                storage.remove(storage.join(output_uri, item), recursive=True)
                storage.move(storage.join(nxt, item), storage.join(output_uri, item))
        storage.remove(nxt, recursive=True)
        return True
    new = set(files)
    # What the new generation has none of (a table, old failure records) goes whole; in
    # the rest, old files it has no file of the same name for (shards it does not have)
    # go, and the others are overwritten below.
    kept = [i for i in REPLACED_ITEMS if any(f == i or f.startswith(i + "/") for f in new)]
    for item in (i for i in REPLACED_ITEMS if i not in kept):
        storage.remove(storage.join(output_uri, item), recursive=True)
    stale = [f for f in _files_under(output_uri, kept) if f not in new]
    storage.remove_files([storage.join(output_uri, f) for f in stale])
    # A file still in _next has not been moved yet (or was copied but not yet deleted).
    for f in sorted(set(_files_under(nxt, PUBLIC_ITEMS)) & new):
        storage.move(storage.join(nxt, f), storage.join(output_uri, f))
    storage.remove(nxt, recursive=True)
    return True


class StagedParts:
    """Which parts (staged batches) of each shard the writer has reported, until the
    shard is complete. A complete shard's parts are handed over once and forgotten, so
    this holds the batches of the shards in flight, not of the corpus; a part reported
    again (Ray ran its batch twice, overwriting the same files) counts once."""

    def __init__(self, expected_docs: dict[str, int]) -> None:
        self._expected = expected_docs
        self._parts: dict[str, dict[str, None]] = {}  # insertion-ordered set per shard
        self._docs: dict[str, int] = {}
        self._complete: set[str] = set()

    def add(self, shard: str, part: str, n_docs: int) -> tuple[bool, list[str] | None]:
        """Record one part of ``shard`` holding ``n_docs`` documents. Returns whether the
        part is new, and the shard's parts when this part completed it (else None)."""
        if shard in self._complete:
            return False, None
        parts = self._parts.setdefault(shard, {})
        if part in parts:
            return False, None
        parts[part] = None
        self._docs[shard] = self._docs.get(shard, 0) + n_docs
        if self._docs[shard] != self._expected[shard]:
            return True, None
        self._complete.add(shard)
        del self._docs[shard], self._parts[shard]
        return True, list(parts)

    def staged_docs(self, shard: str) -> int:
        """Documents staged so far of a shard not yet complete."""
        return self._docs.get(shard, 0)

    def in_flight(self) -> int:
        """Parts held for shards not yet complete."""
        return sum(len(p) for p in self._parts.values())
