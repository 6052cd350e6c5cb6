"""python -m jobs.dictionary: terminology names plus annotated mentions, as one dictionary."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq

from jobs.dictionary import main
from pipeline.linking.dictionary import read_dictionary


def test_mentions_with_one_concept_join_the_terminology(tmp_path, capsys):
    pq.write_table(
        pa.table({"concept_id": ["D1", "D2"], "name": ["asthma", "gout"],
                  "label": ["Disease", "Disease"]}), tmp_path / "kb.parquet",
    )  # fmt: skip
    pq.write_table(
        pa.table({
            "doc_id": ["1"] * 6,
            "text": ["asthmatic", "gout", "DMD", "x and y", "unknown", "Na"],
            "label": ["Disease", "Disease", "Disease", "Disease", "Disease", "Chemical"],
            "concept_id": ["D1", "D2", "D3", "D1|D2", "-1", None],
        }),
        tmp_path / "train.parquet",
    )  # fmt: skip
    out = tmp_path / "dict.parquet"
    rc = main(["--names", str(tmp_path / "kb.parquet"), "--mentions",
               str(tmp_path / "train.parquet"), "--output", str(out)])  # fmt: skip
    assert rc == 0
    d = read_dictionary(str(out))
    # gout repeats D2's name: counted twice; composite, -1 and null ids left out
    assert sorted(zip(d.concept_ids, d.names, d.counts)) == [
        ("D1", "asthma", 1), ("D1", "asthmatic", 1), ("D2", "gout", 2), ("D3", "DMD", 1)
    ]  # fmt: skip
    assert "1 repeat a pair" in capsys.readouterr().out


def test_mentions_without_concept_ids_are_refused_naming_the_file(tmp_path, capsys):
    pq.write_table(pa.table({"concept_id": ["D1"], "name": ["asthma"]}), tmp_path / "kb.parquet")
    pq.write_table(pa.table({"text": ["gout"], "label": ["Disease"]}), tmp_path / "m.parquet")
    rc = main(["--names", str(tmp_path / "kb.parquet"), "--mentions", str(tmp_path / "m.parquet"),
               "--output", str(tmp_path / "d.parquet")])  # fmt: skip
    assert rc == 2
    err = capsys.readouterr().err
    assert "m.parquet" in err and "'concept_id'" in err
    assert not (tmp_path / "d.parquet").exists()
