"""Repeated doc_ids: found from 64-bit hashes, reported exactly (collisions never count)."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.core.repeated_ids import id_hashes, repeated_doc_ids
from pipeline.storage import files as storage


def _rows(table: pa.Table) -> list[tuple[str, str, int]]:
    return sorted(zip(*(table.column(c).to_pylist() for c in ("doc_id", "key", "count"))))


def _expected(files: dict[str, list[str]]) -> list[tuple[str, str, int]]:
    """Brute force: every (id, file) pair of an id that has more than one row in all."""
    total = Counter(i for ids in files.values() for i in ids)
    return sorted({(i, key, total[i]) for key, ids in files.items() for i in ids if total[i] > 1})


def _reader(files: dict[str, list[str]], calls: list[int] | None = None):
    def read():
        if calls is not None:
            calls.append(1)
        return ((key, pa.array(ids, pa.string())) for key, ids in files.items())

    return read


def test_ids_repeated_within_and_across_files_are_reported_from_the_files(tmp_path: Path):
    d = tmp_path / "documents"
    d.mkdir()
    pq.write_table(pa.table({"doc_id": ["a", "b", "a", None, ""]}), d / "k1.parquet")
    pq.write_table(pa.table({"doc_id": ["c", "b", None, ""]}), d / "k2.parquet")
    got = repeated_doc_ids(lambda: storage.doc_id_columns(str(d)))
    # a twice in k1; b once in each file; c, the null and the empty ids (rows that are
    # errors already) are no repeats
    assert _rows(got) == [("a", "k1", 2), ("b", "k1", 2), ("b", "k2", 2)]
    assert repeated_doc_ids(lambda: storage.doc_id_columns(str(tmp_path / "none"))).num_rows == 0


def test_random_tables_match_a_brute_force_count():
    rng = random.Random(5)
    for _ in range(20):
        pool = [f"id-{rng.randrange(10**9)}" for _ in range(rng.randint(1, 400))]
        files = {
            f"part-{k}": [rng.choice(pool) for _ in range(rng.randint(0, 120))]
            for k in range(rng.randint(1, 6))
        }
        assert _rows(repeated_doc_ids(_reader(files))) == _expected(files)


def test_hash_collisions_are_not_reported_as_repeats():
    files = {"k1": ["x", "y", "z", "x"], "k2": ["w", "y"]}

    def colliding(ids: pa.Array) -> np.ndarray:  # every id has the same hash
        return np.zeros(len(ids), np.uint64)

    assert _rows(repeated_doc_ids(_reader(files), colliding)) == _expected(files)
    # no id repeats, all hashes do: nothing is reported
    unique = {"k1": ["p", "q"], "k2": ["r"]}
    assert repeated_doc_ids(_reader(unique), colliding).num_rows == 0


def test_the_ids_are_read_a_second_time_only_when_a_hash_repeats():
    calls: list[int] = []
    assert repeated_doc_ids(_reader({"k1": ["a", "b"], "k2": ["c"]}, calls)).num_rows == 0
    assert len(calls) == 1
    calls.clear()
    assert repeated_doc_ids(_reader({"k1": ["a", "b"], "k2": ["b"]}, calls)).num_rows == 2
    assert len(calls) == 2


def test_hashes_spread_over_all_buckets_and_depend_on_every_byte():
    ids = pa.array([f"doc-{i:06d}" for i in range(4096)], pa.string())
    h = id_hashes(ids)
    assert h.dtype == np.uint64 and len(np.unique(h)) == len(ids)
    # the first pass sorts by the top 4 bits: ids differing late must still spread
    assert len(np.unique(h >> np.uint64(60))) == 16
