"""Last stage: turn document rows into the public tables, staged per shard.

Each batch's rows are staged per shard and table (``OutputFolder.staged_part``) with
names derived from their row range, so a retried batch overwrites its own files; the
driver publishes a shard once all its rows are staged (``pipeline.storage.output``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.storage import files as storage
from pipeline.storage.output import OutputFolder

SUMMARY_SCHEMA = pa.schema(
    [
        pa.field(S.SHARD, pa.string()),
        pa.field("part", pa.string()),
        pa.field("n_docs", pa.int64()),
        pa.field("n_tokens", pa.int64()),
    ]
)


def _flat(batch: pa.Table, column: str) -> tuple[pa.StructArray, np.ndarray]:
    """The structs of a list column, flattened, and the batch row each came from."""
    lists = batch.column(column).combine_chunks()
    counts = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False)
    return lists.flatten(), np.repeat(np.arange(batch.num_rows), counts)


def _cut(batch: pa.Table, doc_idx: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> pa.Array:
    texts = batch.column(S.TEXT_INTERNAL).to_pylist()
    return pa.array([texts[d][s:e] for d, s, e in zip(doc_idx, starts, ends)], pa.string())


def entity_rows(batch: pa.Table) -> pa.Table:
    """One row per entity, with its text cut from the document (``text[start:end]``)
    and its context (null where the run has none)."""
    flat, doc_idx = _flat(batch, S.ENTITIES)
    starts = flat.field(S.START).to_numpy(zero_copy_only=False)
    ends = flat.field(S.END).to_numpy(zero_copy_only=False)
    names = {f.name for f in flat.type}
    context = {
        c: flat.field(c) if c in names else pa.nulls(len(flat), pa.string())
        for c in S.CONTEXT_COLUMNS
    }
    linked = S.CONCEPT_ID in names
    concepts = {c: flat.field(c) for c in S.LINK_COLUMNS} if linked else {}
    return pa.table(
        {
            S.DOC_ID: pc.take(batch.column(S.DOC_ID), pa.array(doc_idx, pa.int64())),
            S.START: pa.array(starts, pa.int32()),
            S.END: pa.array(ends, pa.int32()),
            S.TEXT: _cut(batch, doc_idx, starts, ends),
            S.LABEL: flat.field(S.LABEL),
            S.SCORE: flat.field(S.SCORE),
            **context,
            **concepts,
        },
        schema=S.entity_schema(batch.column(S.DOC_ID).type, linked),
    )


def link_rows(batch: pa.Table) -> pa.Table:
    """One row per (entity, candidate concept), rank 1 the best."""
    flat, doc_idx = _flat(batch, S.LINKS)
    return pa.table(
        {
            S.DOC_ID: pc.take(batch.column(S.DOC_ID), pa.array(doc_idx, pa.int64())),
            **{c: flat.field(c) for c in (S.START, S.END, S.RANK, S.CONCEPT_ID, S.NAME)},
            S.SCORE: flat.field(S.SCORE),
        },
        schema=S.link_schema(batch.column(S.DOC_ID).type),
    )


def section_rows(batch: pa.Table) -> pa.Table:
    """One row per section, with its title as written (``text[title_start:title_end]``)."""
    flat, doc_idx = _flat(batch, S.SECTIONS)
    t_start = flat.field(S.TITLE_START).to_numpy(zero_copy_only=False)
    t_end = flat.field(S.TITLE_END).to_numpy(zero_copy_only=False)
    return pa.table(
        {
            S.DOC_ID: pc.take(batch.column(S.DOC_ID), pa.array(doc_idx, pa.int64())),
            S.SECTION: flat.field(S.SECTION),
            S.TITLE: _cut(batch, doc_idx, t_start, t_end),
            S.TITLE_START: flat.field(S.TITLE_START),
            S.TITLE_END: flat.field(S.TITLE_END),
            S.START: flat.field(S.START),
            S.END: flat.field(S.END),
        },
        schema=S.section_schema(batch.column(S.DOC_ID).type),
    )


def embedding_rows(batch: pa.Table, dim: int) -> pa.Table:
    """One row per window: doc_id, chunk_index, character span, tokens, vector."""
    flat, doc_idx = _flat(batch, S.CHUNK_EMBEDDINGS)
    counts = np.bincount(doc_idx, minlength=batch.num_rows)
    chunk_index = np.concatenate([np.arange(c) for c in counts]) if len(counts) else []
    return pa.table(
        {
            S.DOC_ID: pc.take(batch.column(S.DOC_ID), pa.array(doc_idx, pa.int64())),
            S.CHUNK_INDEX: pa.array(chunk_index, pa.int32()),
            S.START: flat.field(S.START),
            S.END: flat.field(S.END),
            S.N_TOKENS: flat.field(S.N_TOKENS),
            S.EMBEDDING: flat.field(S.EMBEDDING),
        },
        schema=S.embedding_schema(dim, batch.column(S.DOC_ID).type),
    )


def document_rows(batch: pa.Table, token_role: str | None, dim: int | None) -> pa.Table:
    """Exactly one row per input document."""
    n = batch.num_rows
    if token_role is not None:
        ids = batch.column(S.tokens_column(token_role, S.TOKEN_IDS))
        n_tokens = pc.list_value_length(ids).fill_null(0)
    else:
        n_tokens = pa.array(np.zeros(n, np.int64))
    if S.CHUNK_EMBEDDINGS in batch.column_names:
        n_chunks = pc.list_value_length(batch.column(S.CHUNK_EMBEDDINGS)).fill_null(0)
        embedding = batch.column(S.DOC_EMBEDDING)
    else:
        # NER only: its windows (a document with no tokens has none)
        if S.N_WINDOWS_INTERNAL in batch.column_names:
            n_chunks = batch.column(S.N_WINDOWS_INTERNAL)
        else:
            n_chunks = pa.array(np.zeros(n, np.int32))
        embedding = pa.nulls(n, S.document_schema(dim).field(S.EMBEDDING).type)
    return pa.table(
        {
            S.DOC_ID: batch.column(S.DOC_ID),
            S.N_CHARS: batch.column(S.N_CHARS_INTERNAL),
            S.N_TOKENS: pc.cast(n_tokens, pa.int64()),
            S.N_CHUNKS: pc.cast(n_chunks, pa.int32()),
            S.STATUS: batch.column(S.STATUS_INTERNAL),
            S.ERROR: batch.column(S.ERROR_INTERNAL),
            S.EMBEDDING: embedding,
        },
        schema=S.document_schema(dim, batch.column(S.DOC_ID).type),
    )


class StageWriter:
    """Writes each shard's slice of a batch to staging; returns one summary row per slice."""

    def __init__(
        self, out: OutputFolder, keys: dict[str, str], token_role: str | None, dim: int | None
    ) -> None:
        self.out = out
        self.keys = keys  # shard URI → shard key
        self.token_role = token_role
        self.dim = dim

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = []
        shards = batch.column(S.SHARD).to_numpy(zero_copy_only=False)
        for shard in dict.fromkeys(shards.tolist()):
            part = batch.filter(pa.array(shards == shard))
            first = int(pc.min(part.column(S.ROW)).as_py())
            last = int(pc.max(part.column(S.ROW)).as_py())
            name = f"r{first:012d}-{last:012d}.parquet"
            tables = {S.DOCUMENTS_DIR: document_rows(part, self.token_role, self.dim)}
            if S.ENTITIES in part.column_names:
                tables[S.ENTITIES_DIR] = entity_rows(part)
            if S.SECTIONS in part.column_names:
                tables[S.SECTIONS_DIR] = section_rows(part)
            if S.LINKS in part.column_names:
                tables[S.LINKS_DIR] = link_rows(part)
            if S.CHUNK_EMBEDDINGS in part.column_names and self.dim:
                tables[S.EMBEDDINGS_DIR] = embedding_rows(part, self.dim)
            for table_name, table in tables.items():
                path = self.out.staged_part(self.keys[shard], table_name, name)
                storage.write_parquet_table(path, table)
            n_tokens = int(pc.sum(tables[S.DOCUMENTS_DIR].column(S.N_TOKENS)).as_py() or 0)
            rows.append(
                {S.SHARD: shard, "part": name, "n_docs": part.num_rows, "n_tokens": n_tokens}
            )
        return pa.Table.from_pylist(rows, schema=SUMMARY_SCHEMA)
