"""Reading --spans before the run: missing columns refused up front, ids in the output's type."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.execution import given_spans
from pipeline.types import InputError


def _write(tmp_path, table: pa.Table) -> str:
    path = tmp_path / "spans.parquet"
    pq.write_table(table, path)
    return str(path)


def test_a_missing_column_is_named(tmp_path) -> None:
    uri = _write(tmp_path, pa.table({"doc_id": ["a"], "start": [0], "end": [1]}))
    with pytest.raises(InputError, match=r"no column\(s\) \['label'\]"):
        given_spans.read(uri, "string")


def test_offsets_must_be_integers(tmp_path) -> None:
    uri = _write(tmp_path, pa.table({"doc_id": ["a"], "start": ["0"], "end": [1], "label": ["x"]}))
    with pytest.raises(InputError, match="'start' has type string"):
        given_spans.read(uri, "string")


def test_ids_take_the_outputs_type_and_bad_ones_become_unknown(tmp_path) -> None:
    table = pa.table(
        {"doc_id": ["101", "x7", None], "start": [0, 1, 2], "end": [1, 2, 3], "label": ["a"] * 3}
    )
    got = given_spans.read(_write(tmp_path, table), "int64")
    assert got.column("doc_id").type == pa.int64()
    assert got.column("doc_id").to_pylist() == [101, None, None]
    ints = pa.table({"doc_id": [101, 7], "start": [0, 1], "end": [1, 2], "label": ["a", "b"]})
    got = given_spans.read(_write(tmp_path, ints), "string")
    assert got.column("doc_id").to_pylist() == ["101", "7"]


def test_only_non_null_spans_with_start_before_end_are_passed_on_sorted(tmp_path) -> None:
    table = pa.table(
        {"doc_id": ["b", "a", "a", None], "start": [0, 5, 3, 0], "end": [2, 5, 4, 1],
         "label": ["x", "x", None, "x"]}
    )  # fmt: skip
    keep = given_spans.attachable(given_spans.read(_write(tmp_path, table), "string"))
    assert keep.to_pylist() == [{"doc_id": "b", "start": 0, "end": 2, "label": "x"}]
