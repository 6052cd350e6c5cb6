"""doc_ids that occur in more than one row of a documents table, found in memory that
stays at 8 bytes a document whatever the ids (36M PubMed abstracts: about 290 MB), where
grouping the ids themselves held some 300 bytes a document in the driver
(``docs/experiments/repeated_ids_memory.py``).

A first pass keeps only a 64-bit hash of each id; a second pass, run only when some
hash repeats, rereads the ids of those hashes and counts them exactly, so a hash
collision is never reported as a repeat.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

# What a documents table is read as: (file key, non-null doc_ids) one file at a time.
IdColumns = Iterable[tuple[str, pa.Array]]
Hasher = Callable[[pa.Array], np.ndarray]

# Hashes are sorted a sixteenth at a time, so that sorting adds 1/16 to the 8 bytes.
_BUCKET_BITS = 4


def id_hashes(ids: pa.Array) -> np.ndarray:
    """A uint64 hash of each id (pandas' vectorised SipHash of its UTF-8 bytes)."""
    return pd.util.hash_array(ids.to_numpy(zero_copy_only=False), categorize=False)


def repeated_hashes(columns: IdColumns, hasher: Hasher = id_hashes) -> np.ndarray:
    """The sorted hash values that occur more than once over all ``columns``."""
    shift = np.uint64(64 - _BUCKET_BITS)
    buckets: list[list[np.ndarray]] = [[] for _ in range(1 << _BUCKET_BITS)]
    for _, ids in columns:
        hashes = np.asarray(hasher(ids), np.uint64)
        top = hashes >> shift
        for b, parts in enumerate(buckets):
            parts.append(hashes[top == b])
    found = []
    for b, parts in enumerate(buckets):
        hashes = np.concatenate(parts) if parts else np.empty(0, np.uint64)
        buckets[b] = []
        hashes.sort()
        found.append(np.unique(hashes[1:][hashes[1:] == hashes[:-1]]))
    return np.concatenate(found)


def _empty() -> pa.Table:
    return pa.table(
        {
            "doc_id": pa.array([], pa.string()),
            "key": pa.array([], pa.string()),
            "count": pa.array([], pa.int64()),
        }
    )


def repeated_doc_ids(read: Callable[[], IdColumns], hasher: Hasher = id_hashes) -> pa.Table:
    """One row (``doc_id``, ``key``, ``count``) per file that holds a doc_id found in more
    than one row of the table, ``count`` being the id's total over all files. ``read()``
    reads the table afresh; it is called a second time only when some hash repeats."""
    candidates = repeated_hashes(read(), hasher)
    if not candidates.size:
        return _empty()
    parts = []
    for key, ids in read():
        keep = np.isin(np.asarray(hasher(ids), np.uint64), candidates)
        if keep.any():
            hit = ids.filter(pa.array(keep)).cast(pa.string())
            parts.append(pa.table({"doc_id": hit, "key": pa.array([key] * len(hit), pa.string())}))
    if not parts:  # the table changed between the two reads
        return _empty()
    table = pa.concat_tables(parts)
    totals = table.group_by("doc_id").aggregate([("key", "count")])
    totals = totals.rename_columns(["doc_id", "count"])
    rows = table.group_by(["doc_id", "key"]).aggregate([]).join(totals, "doc_id")
    return rows.filter(pc.greater(rows.column("count"), 1))
