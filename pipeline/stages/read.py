"""Reading input shards into document batches, with per-document validation."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.storage import files as storage


@dataclass(frozen=True)
class ReadSettings:
    id_column: str
    text_column: str
    max_chars: int  # longer documents get status "error" (never truncated)
    docs_per_batch: int
    id_type: str = "string"  # or "int64": the output's doc_id type (schemas.id_type)


def document_columns(
    table: pa.Table,
    shard: str,
    settings: ReadSettings,
    seen: dict[str | int, int] | None = None,
    first_row: int = 0,
) -> pa.Table:
    """Validate one block of a shard and turn it into the internal document columns.

    Every row comes out, with ``_status`` ``ok``, ``empty`` or ``error`` and a message
    that names the problem (never the text itself). ``seen`` maps each doc_id met so
    far in this shard to its row index (updated here); ``first_row`` is the shard row
    index of the block's first row. A repeated doc_id keeps its first row and every
    later one gets status ``error`` naming that row. Ids come out as ``int64`` when
    ``settings.id_type`` says so, as ``string`` otherwise.
    """
    n = table.num_rows
    rows = _RowStatus(np.full(n, S.STATUS_OK, dtype=object), np.full(n, None, dtype=object))
    texts, lengths = _check_texts(table.column(settings.text_column), shard, settings, rows)
    ids = _check_ids(table.column(settings.id_column), settings, rows, seen, first_row)
    not_ok = rows.status != S.STATUS_OK
    if not_ok.any():
        texts = pc.if_else(pa.array(not_ok), "", texts)
    return pa.table(
        {
            S.DOC_ID: ids,
            S.TEXT_INTERNAL: texts,
            S.STATUS_INTERNAL: pa.array(rows.status, pa.string()),
            S.ERROR_INTERNAL: pa.array(rows.error, pa.string()),
            S.N_CHARS_INTERNAL: pa.array(lengths, pa.int64()),
        }
    )


@dataclass
class _RowStatus:
    """Each row's status and message, set by the checks in order: a later check's
    message replaces an earlier one's."""

    status: np.ndarray
    error: np.ndarray

    def mark(self, rows: np.ndarray, status: str, message: object) -> None:
        self.status[rows] = status
        self.error[rows] = message


def _check_texts(
    col: pa.ChunkedArray, shard: str, settings: ReadSettings, rows: _RowStatus
) -> tuple[pa.Array, np.ndarray]:
    """The texts as ``string`` (null as "") and their lengths in characters; empty,
    null, too long and undecodable texts marked."""
    n = len(col)
    if pa.types.is_null(col.type):  # all null: pandas writes all-None columns so
        col = pa.nulls(n, pa.string())
    if not is_string_type(col.type):
        msg = (
            f"text column {settings.text_column!r} has type {col.type} in shard "
            f"{shard}, expected string"
        )
        rows.mark(np.ones(n, dtype=bool), S.STATUS_ERROR, msg)
        return pa.array([""] * n, pa.string()), np.zeros(n, dtype=np.int64)
    texts = _as_strings(col)
    bad_text = _invalid_utf8(texts)
    if bad_text.any():
        texts = pc.if_else(pa.array(bad_text), pa.scalar(None, pa.string()), texts)
    is_null = pc.is_null(texts).to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.utf8_length(texts), 0).to_numpy(zero_copy_only=False)
    blank = pc.fill_null(pc.utf8_is_space(texts), False).to_numpy(zero_copy_only=False)
    rows.status[is_null | blank | (lengths == 0)] = S.STATUS_EMPTY
    rows.error[is_null] = "text is null"
    too_long = lengths > settings.max_chars
    rows.mark(
        too_long,
        S.STATUS_ERROR,
        [
            f"text has {int(k)} characters, over the limit of {settings.max_chars} (--max-chars)"
            for k in lengths[too_long]
        ],
    )
    # Not valid UTF-8 (e.g. a lone surrogate written by a non-validating writer):
    # the text cannot be decoded, so it is neither counted (0 characters) nor tokenized.
    rows.mark(bad_text, S.STATUS_ERROR, f"text column {settings.text_column!r} holds invalid UTF-8")
    return pc.fill_null(texts, ""), lengths


def _check_ids(
    col: pa.ChunkedArray,
    settings: ReadSettings,
    rows: _RowStatus,
    seen: dict[str | int, int] | None,
    first_row: int,
) -> pa.Array:
    """The ids as the output's id type; repeated, missing and undecodable ids marked."""
    if settings.id_type == "int64":
        ids = _as_int64(col)
        missing = pc.is_null(ids).to_numpy(zero_copy_only=False)
        bad_id = np.zeros(len(ids), dtype=bool)
    else:
        ids = _as_strings(col)
        bad_id = _invalid_utf8(ids)
        if bad_id.any():
            ids = pc.if_else(pa.array(bad_id), pa.scalar(None, pa.string()), ids)
        empty = pc.equal(pc.utf8_length(ids), 0)
        missing = pc.fill_null(empty, True).to_numpy(zero_copy_only=False)
    if seen is not None:
        for i, doc_id in enumerate(ids.to_pylist()):
            if doc_id is None or doc_id == "":
                continue
            first = seen.setdefault(doc_id, first_row + i)
            if first != first_row + i:
                rows.mark(
                    np.array([i]),
                    S.STATUS_ERROR,
                    f"duplicate {settings.id_column}: row {first} of this shard (counting "
                    "from 0) has the same id",
                )
    rows.mark(missing, S.STATUS_ERROR, f"{settings.id_column} is null or empty")
    rows.mark(bad_id, S.STATUS_ERROR, f"{settings.id_column} holds invalid UTF-8")
    return ids


def read_shard(shard: str, settings: ReadSettings) -> Iterator[pa.Table]:
    """Yield a shard's documents in batches of at most ``docs_per_batch`` rows, each
    tagged with its shard and row index (the keys of exactly-once commit). Doc ids are
    checked for repeats across the whole shard; repeats across shards are the caller's."""
    row = 0
    seen: dict[str | int, int] = {}  # doc_id → first row, over the whole shard
    for block in storage.iter_parquet_batches(
        shard, [settings.id_column, settings.text_column], settings.docs_per_batch
    ):
        docs = document_columns(block, shard, settings, seen, row)
        n = docs.num_rows
        docs = docs.append_column(S.SHARD, pa.array([shard] * n, pa.string()))
        docs = docs.append_column(S.ROW, pa.array(np.arange(row, row + n), pa.int64()))
        row += n
        yield docs


def is_string_type(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        t = t.value_type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def _as_strings(col: pa.ChunkedArray) -> pa.Array:
    """Any id or text column as a plain ``string`` array (dictionary and large types
    decoded; numeric ids rendered as text)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    # Bytes are viewed as text, unchecked: a cast would fail the whole block on one row
    # of invalid UTF-8, which _invalid_utf8 turns into that row's error instead.
    if pa.types.is_binary(arr.type):
        arr = arr.view(pa.string())
    elif pa.types.is_large_binary(arr.type):
        arr = arr.view(pa.large_string())
    if not pa.types.is_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return arr


def _as_int64(col: pa.ChunkedArray) -> pa.Array:
    """An integer id column as ``int64`` (dictionary decoded)."""
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return pc.cast(arr, pa.int64())


def _invalid_utf8(arr: pa.Array) -> np.ndarray:
    """Rows of a ``string`` array whose bytes are not valid UTF-8 (Parquet readers do
    not check; a lone surrogate encoded by another writer ends up like this)."""
    try:
        arr.validate(full=True)
        return np.zeros(len(arr), dtype=bool)
    except pa.ArrowInvalid:
        pass
    bad = np.zeros(len(arr), dtype=bool)
    for i, raw in enumerate(arr.cast(pa.binary()).to_pylist()):
        if raw is not None:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                bad[i] = True
    return bad
