"""Reading a link dictionary: bad rows counted and left out, bad files refused before any
model loads, naming the file and the column."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.linking.dictionary import from_table, normalize_name, read_dictionary
from pipeline.types import InputError


def test_normalized_names_ignore_case_punctuation_and_spacing():
    assert normalize_name("Breast-Cancer,") == normalize_name("  breast   cancer")
    assert normalize_name("Type 2 Diabetes") == "type 2 diabetes"
    assert normalize_name("ＤＭＤ") == "dmd"  # full-width letters, as some PDFs give them
    assert normalize_name("--") == ""
    assert normalize_name("cancer") != normalize_name("cancers")


def test_null_ids_empty_names_and_repeated_pairs_are_counted_and_left_out():
    table = pa.table(
        {
            "concept_id": ["D1", "D1", None, "D2", "D2", " ", "D3", "D1"],
            "name": ["asthma", "asthma", "gout", "", None, "flu", "gout", "Asthma"],
            "label": ["Disease", "Disease", "Disease", "Disease", None, None, None, "Disease"],
        }
    )
    d = from_table(table, "terms.parquet")
    assert sorted(zip(d.concept_ids, d.names)) == [("D1", "Asthma"), ("D1", "asthma"),
                                                   ("D3", "gout")]  # fmt: skip
    r = d.report
    assert (r.rows, r.names, r.concepts) == (8, 3, 2)
    assert (r.null_ids, r.empty_names, r.duplicates) == (2, 2, 1)
    assert r.labels == ["Disease"]
    assert dict(zip(d.names, d.labels))["gout"] is None  # a name without a label
    assert dict(zip(zip(d.concept_ids, d.names), d.counts))[("D1", "asthma")] == 2


def test_the_content_hash_ignores_row_order_and_sees_any_change():
    rows = {"concept_id": ["D1", "D2"], "name": ["asthma", "gout"]}
    a = from_table(pa.table(rows), "a")
    b = from_table(pa.table({k: v[::-1] for k, v in rows.items()}), "b")
    c = from_table(pa.table({"concept_id": ["D1", "D3"], "name": ["asthma", "gout"]}), "c")
    assert a.sha256 == b.sha256
    assert a.sha256 != c.sha256
    twice = from_table(pa.table({"concept_id": ["D1", "D1", "D2"],
                                 "name": ["asthma", "asthma", "gout"]}), "d")  # fmt: skip
    assert twice.names_sha256 == a.names_sha256  # the same names: the same vectors
    assert twice.sha256 != a.sha256  # but counts order exact-name ties


@pytest.mark.parametrize(
    "table, message",
    [
        (pa.table({"id": ["D1"], "name": ["asthma"]}), "no column 'concept_id'"),
        (pa.table({"concept_id": ["D1"], "term": ["asthma"]}), "no column 'name'"),
        (pa.table({"concept_id": pa.array([], pa.string()), "name": pa.array([], pa.string())}),
         "has no rows"),
        (pa.table({"concept_id": [None, "D1"], "name": ["asthma", " "]}), "no usable name"),
        (pa.table({"concept_id": [1, 2], "name": ["a", "b"]}), "column 'concept_id' has type"),
    ],
)  # fmt: skip
def test_bad_dictionaries_are_refused_naming_file_and_column(tmp_path, table, message):
    path = tmp_path / "terms.parquet"
    pq.write_table(table, path)
    with pytest.raises(InputError, match=message) as err:
        read_dictionary(str(path))
    assert str(path) in str(err.value)


def test_a_missing_dictionary_or_a_folder_without_parquet_is_refused(tmp_path):
    with pytest.raises(InputError, match="not found"):
        read_dictionary(str(tmp_path / "absent.parquet"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no Parquet files"):
        read_dictionary(str(tmp_path / "empty"))


def test_a_prefix_of_several_files_is_one_dictionary(tmp_path):
    (tmp_path / "kb").mkdir()
    pq.write_table(pa.table({"concept_id": ["D1"], "name": ["asthma"]}), tmp_path / "kb/a.parquet")
    pq.write_table(pa.table({"concept_id": ["D2"], "name": ["gout"]}), tmp_path / "kb/b.parquet")
    d = read_dictionary(str(tmp_path / "kb"))
    assert d.names == ["asthma", "gout"] and d.labels == [None, None]
