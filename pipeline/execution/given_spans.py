"""Spans given with ``--spans``: read and checked before the run, counted after it.

A given span that cannot attach (a null field, ``start >= end``, an unknown doc_id, a
document whose status is not ``ok``, offsets outside the text) never stops the job and is
never dropped silently: run.json counts it by reason (``spans_rejected``) and names the
first doc_ids of each reason (``spans_rejected_doc_ids``), never any text.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.core.given_spans import REASONS, rejection_reasons
from pipeline.storage import files as storage
from pipeline.types import InputError

log = logging.getLogger(__name__)

COLUMNS = (S.DOC_ID, S.START, S.END, S.LABEL)
FIRST_IDS = 5


def _ids_as(column: pa.ChunkedArray, id_type: str) -> pa.Array:
    """doc_ids in the output's id type; an id that is not one (text "abc" for integer ids)
    becomes null, and its span an unknown doc_id."""
    column = column.combine_chunks()
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    target = S.ID_TYPES[id_type]
    if column.type == target:
        return column
    if id_type == "string":
        if pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type):
            return pc.cast(column, pa.string())
        if pa.types.is_floating(column.type):  # 101.0 as pandas writes ids with a gap
            ints = pc.cast(column, pa.int64(), safe=False)
            return pc.cast(ints, pa.string())
        return pc.cast(column, pa.string())
    values = []
    for v in column.to_pylist():
        try:
            values.append(None if v is None else int(str(v).strip()))
        except ValueError:
            values.append(None)
    return pa.array(values, pa.int64())


def read(uri: str, id_type: str) -> pa.Table:
    """The given spans at ``uri`` (a Parquet file or prefix), columns ``COLUMNS`` with
    doc_id in the output's id type. Raises ``InputError`` naming a missing or mistyped
    column."""
    try:
        table = storage.read_parquet_table(uri)
    except (OSError, ValueError) as exc:
        raise InputError(f"--spans {uri}: not readable as Parquet ({type(exc).__name__})") from exc
    missing = [c for c in COLUMNS if c not in table.column_names]
    if missing:
        raise InputError(
            f"--spans {uri} has no column(s) {missing} (columns: {table.column_names}); "
            "given spans need doc_id, start, end (characters, end exclusive) and label"
        )
    for c in (S.START, S.END):
        if not pa.types.is_integer(table.schema.field(c).type):
            raise InputError(
                f"--spans {uri}: column {c!r} has type {table.schema.field(c).type}; "
                "offsets must be integers (characters)"
            )
    return pa.table(
        {
            S.DOC_ID: _ids_as(table.column(S.DOC_ID), id_type),
            S.START: pc.cast(table.column(S.START), pa.int64()),
            S.END: pc.cast(table.column(S.END), pa.int64()),
            S.LABEL: pc.cast(table.column(S.LABEL), pa.string()),
        }
    )


def _null(spans: pa.Table) -> np.ndarray:
    null = np.zeros(spans.num_rows, bool)
    for c in COLUMNS:
        null |= spans.column(c).is_null().to_numpy(zero_copy_only=False)
    return null


def attachable(spans: pa.Table) -> pa.Table:
    """The spans the entity stage may attach: no null field, ``start < end``; sorted."""
    keep = ~_null(spans)
    keep &= ~(pc.fill_null(pc.greater_equal(spans[S.START], spans[S.END]), True)
              .to_numpy(zero_copy_only=False))  # fmt: skip
    return spans.filter(pa.array(keep)).sort_by([(S.DOC_ID, "ascending"), (S.START, "ascending")])


def report(output_uri: str, spans: pa.Table) -> dict[str, Any]:
    """run.json's account of the given spans against the documents now in the output."""
    docs = storage.read_parquet_table(
        storage.join(output_uri, S.DOCUMENTS_DIR), [S.DOC_ID, S.N_CHARS, S.STATUS]
    )
    ok_ids, lengths = {}, {}
    for d, n, status in zip(*(docs.column(c).to_pylist() for c in docs.column_names)):
        lengths[d] = max(lengths.get(d, 0), n)
        ok_ids[d] = ok_ids.get(d, False) or status == S.STATUS_OK
    ids = spans.column(S.DOC_ID).to_pylist()
    start = spans.column(S.START).fill_null(0).to_numpy(zero_copy_only=False)
    end = spans.column(S.END).fill_null(0).to_numpy(zero_copy_only=False)
    known = np.array([d in lengths for d in ids], bool)
    ok = np.array([ok_ids.get(d, False) for d in ids], bool)
    n_chars = np.array([lengths.get(d, 0) for d in ids], np.int64)
    reasons = rejection_reasons(_null(spans), start, end, known, ok, n_chars)
    rejected = {r: int((reasons == r).sum()) for r in REASONS}
    first = {r: [ids[i] for i in np.flatnonzero(reasons == r)[:FIRST_IDS]] for r in REASONS}
    first = {r: v for r, v in first.items() if v}
    n_bad = sum(rejected.values())
    if n_bad:
        why = "; ".join(f"{r} {rejected[r]}, first doc_ids {v}" for r, v in first.items())
        log.warning(
            "%d of %d given spans were not attached: %s (run.json: spans_rejected)",
            n_bad, len(ids), why,
        )  # fmt: skip
    return {
        "spans_given": len(ids),
        "spans_attached": len(ids) - n_bad,
        "spans_rejected": rejected,
        "spans_rejected_doc_ids": first,
    }
