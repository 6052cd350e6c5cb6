"""The output folder and its exactly-once bookkeeping, owned by one class.

    <table>/<key>.parquet            documents/, entities/, embeddings/: one file per shard
    _commits/<key>.json              a shard's commit record, written after its tables
    _staging/<key>/<table>/<part>    a shard's batches until the shard is published
    _failures/<key>.json             why a shard could not be read (type and message only)
    _manifest.json                   the configuration (fingerprint, models) it belongs to
    run.json                         the last run's counts, timings and configuration
    _next/                           an overwrite's new generation, promoted once complete

A shard's rows become visible together: its staged parts are merged into one file per
table named after the shard, so a retry overwrites rather than duplicates, and the commit
record is written last. A shard with a commit record is done; a rerun skips it. Object
stores have no atomic folder rename; one file per table and a record written after them
give the same guarantee there. Stages never see these paths: the writer asks for a part's
path, the driver for everything else.
"""

from __future__ import annotations

import posixpath
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.storage import files as storage
from pipeline.types import InputError

TABLES = S.TABLE_DIRS
# Columns whose values each commit record counts, per table.
TALLIED = {S.ENTITIES_DIR: (S.LABEL, S.NEGATION), S.DOCUMENTS_DIR: (S.STATUS,)}
COMMITS, STAGING, FAILURES, MANIFEST = "_commits", "_staging", "_failures", "_manifest.json"
NEXT, PROMOTING = "_next", "_PROMOTING"
PUBLIC_ITEMS = (*TABLES, COMMITS, MANIFEST, S.RUN_JSON)
# What an old output may hold that the new generation replaces or drops.
REPLACED_ITEMS = (*PUBLIC_ITEMS, FAILURES, STAGING)


@dataclass(frozen=True)
class OutputFolder:
    uri: str

    # -- where things are -------------------------------------------------------------

    def path(self, *parts: str) -> str:
        return storage.join(self.uri, *parts)

    def staged_part(self, key: str, table: str, part: str) -> str:
        """Where the writer stages one batch (``part``) of a shard's ``table``."""
        return self.path(STAGING, key, table, part)

    def commit_record(self, key: str) -> str:
        return self.path(COMMITS, f"{key}.json")

    @property
    def manifest(self) -> str:
        return self.path(MANIFEST)

    @property
    def next_generation(self) -> OutputFolder:
        return OutputFolder(self.path(NEXT))

    # -- which folder a run writes, and whose it is -----------------------------------

    @classmethod
    def for_run(cls, uri: str, mode: str, fingerprint: str) -> OutputFolder:
        """Where a run of configuration ``fingerprint`` writes: the output itself, or for
        an overwrite of an existing output, its ``_next`` generation (promoted once
        complete). Resuming into an output of another configuration is refused."""
        final = cls(uri)
        final.finish_promotion()  # a swap a crashed overwrite left half-done
        if not storage.exists(final.manifest):
            return final
        if mode == "overwrite":
            nxt = final.next_generation
            if storage.exists(nxt.manifest) and nxt.fingerprint() != fingerprint:
                storage.remove(nxt.uri, recursive=True)  # an unfinished overwrite of another config
            return nxt
        old = final.fingerprint()
        if old != fingerprint:
            raise InputError(
                f"output {uri} holds results of another configuration "
                f"(fingerprint {old}, this run {fingerprint}: a different model, weights, "
                "window, stride, pooling, context, given spans or columns); use a new "
                "--output, or --mode overwrite to replace it"
            )
        return final

    def fingerprint(self) -> str | None:
        return storage.read_json(self.manifest).get("fingerprint")

    def claim(self, fingerprint: str, models: dict[str, Any]) -> None:
        """Record which configuration the folder belongs to (once)."""
        if not storage.exists(self.manifest):
            storage.write_json(self.manifest, {"fingerprint": fingerprint, "models": models})

    # -- commits ----------------------------------------------------------------------

    def committed_keys(self) -> set[str]:
        """Keys of the shards whose commit record exists."""
        files = storage.list_files(self.path(COMMITS))
        return {posixpath.basename(f).removesuffix(".json") for f in files if f.endswith(".json")}

    def commit_records(self) -> dict[str, dict[str, Any]]:
        """Every commit record, by shard key."""
        keys = sorted(self.committed_keys())
        return dict(zip(keys, storage.read_jsons([self.commit_record(k) for k in keys])))

    def publish(
        self,
        key: str,
        shard_uri: str,
        schemas: dict[str, pa.Schema],
        meta: dict[str, Any],
        parts: Collection[str],
    ) -> dict[str, Any]:
        """Merge a shard's staged ``parts`` (file names) into its final files, then write
        its commit record; returns the record (row counts per table).

        Only the named parts are read: a run that died may have left parts cut at other
        row boundaries (another batch size), which would repeat rows. Parts are
        concatenated in row order (their names start with the first row index).

        Safe to retry: when this run (``meta["run"]``) already wrote the record, the
        record is returned as it stands; and a part missing from staging fails the call
        before any table is written, so a shard is never committed with fewer rows than
        were staged.
        """
        staging = self.path(STAGING, key)
        record_uri = self.commit_record(key)
        if "run" in meta and storage.exists(record_uri):
            done = storage.read_json(record_uri)
            if done.get("run") == meta["run"] and done.get("shard") == shard_uri:
                storage.remove(staging, recursive=True)  # what the first attempt left to do
                return done
        found = _staged_files(staging, schemas, set(parts), key)
        counts: dict[str, int] = {}
        tallies: dict[str, dict[str, int]] = {}
        for table_name, schema in schemas.items():
            tables = [storage.read_parquet_table(p) for p in sorted(found[table_name])]
            merged = pa.concat_tables(tables).cast(schema) if tables else schema.empty_table()
            storage.write_parquet_table(self.path(table_name, f"{key}.parquet"), merged, schema)
            counts[table_name] = merged.num_rows
            for column in TALLIED.get(table_name, ()):
                tallies[column] = {
                    str(v["values"]): int(v["counts"])
                    for v in pc.value_counts(merged.column(column)).to_pylist()
                    if v["values"] is not None
                }
        record = {
            "shard": shard_uri,
            "key": key,
            "rows": counts,
            "labels": tallies.get(S.LABEL, {}),
            "statuses": tallies.get(S.STATUS, {}),
            "negation": tallies.get(S.NEGATION, {}),
            **meta,
        }
        storage.write_json(record_uri, record)
        storage.remove(staging, recursive=True)
        return record

    def given_spans(self) -> str:
        """Where a run keeps the given spans its entity actors read (in staging: removed
        with it once every shard is committed)."""
        return self.path(STAGING, "_given_spans.parquet")

    def clear_staging(self) -> None:
        storage.remove(self.path(STAGING), recursive=True)

    def write_run_json(self, run: dict[str, Any]) -> None:
        storage.write_json(self.path(S.RUN_JSON), run)

    # -- failures ---------------------------------------------------------------------

    def record_failure(self, key: str, shard: str, exc: BaseException) -> None:
        """Note why a shard could not be read (the exception type and message, never data)."""
        storage.write_json(
            self.path(FAILURES, f"{key}.json"),
            {"shard": shard, "error": f"{type(exc).__name__}: {exc}"},
        )

    def forget_failures(self, keys: set[str]) -> None:
        """Remove the failure records of the shards ``keys`` (one listing, one bulk delete)."""
        files = storage.list_files(self.path(FAILURES))
        storage.remove_files(
            [f for f in files if posixpath.basename(f).removesuffix(".json") in keys]
        )

    def failure(self, key: str) -> str | None:
        path = self.path(FAILURES, f"{key}.json")
        return storage.read_json(path)["error"] if storage.exists(path) else None

    # -- promotion of an overwrite ----------------------------------------------------

    def promote_next(self) -> None:
        """Replace the tables with the completed ``_next`` generation.

        Object stores cannot swap folders, and move a folder by copying then deleting
        file by file, so the swap goes file by file from a list written first (the
        marker): a crash at any point is finished by the next run
        (:meth:`finish_promotion`), which can always tell an old file from a new one, and
        old files are only removed once the new generation is complete.
        """
        nxt = self.next_generation.uri
        files = sorted(_files_under(nxt, PUBLIC_ITEMS))
        marker = {"promoting_into": self.uri, "files": files}
        storage.write_json(storage.join(nxt, PROMOTING), marker)
        self.finish_promotion()

    def finish_promotion(self) -> bool:
        """Complete a promotion that was started; returns whether there was one."""
        nxt = self.next_generation.uri
        marker = storage.join(nxt, PROMOTING)
        if not storage.exists(marker):
            return False
        files = storage.read_json(marker).get("files")
        if files is None:  # a marker of an older version: it replaced whole items
            for item in PUBLIC_ITEMS:
                if storage.exists(storage.join(nxt, item)):
                    storage.remove(self.path(item), recursive=True)
                    storage.move(storage.join(nxt, item), self.path(item))
            storage.remove(nxt, recursive=True)
            return True
        new = set(files)
        # What the new generation has none of (a table, old failure records) goes whole;
        # in the rest, old files it has no file of the same name for (shards it does not
        # have) go, and the others are overwritten below.
        kept = [i for i in REPLACED_ITEMS if any(f == i or f.startswith(i + "/") for f in new)]
        for item in (i for i in REPLACED_ITEMS if i not in kept):
            storage.remove(self.path(item), recursive=True)
        stale = [f for f in _files_under(self.uri, kept) if f not in new]
        storage.remove_files([self.path(f) for f in stale])
        # A file still in _next has not been moved yet (or was copied but not yet deleted).
        for f in sorted(set(_files_under(nxt, PUBLIC_ITEMS)) & new):
            storage.move(storage.join(nxt, f), self.path(f))
        storage.remove(nxt, recursive=True)
        return True


def _staged_files(
    staging: str, schemas: dict[str, pa.Schema], wanted: set[str], key: str
) -> dict[str, list[str]]:
    """The staged files of each table named in ``wanted``; raises when one is missing."""
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
    return found


def _files_under(root: str, items: Collection[str]) -> list[str]:
    """Paths relative to ``root`` of the files of ``items`` (folders or files) under it."""
    base = storage.filesystem(root)[1].rstrip("/") + "/"
    paths = [
        storage.filesystem(f)[1]
        for item in items
        for f in storage.list_files(storage.join(root, item))
    ]
    return [p[len(base) :] for p in paths if p.startswith(base)]
