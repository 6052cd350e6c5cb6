"""The name-vector cache: one key per (dictionary content, model weights, tokenizer,
pooling, window); a damaged or mismatched entry is embedded again, never used."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pyarrow as pa

from pipeline.linking import index as cache
from pipeline.linking.dictionary import from_table
from pipeline.models.loading import ModelInfo

INFO = ModelInfo(
    source="m", local_dir="/m", model_type="bert", max_length=512, weights_sha256="w1",
    revision=None, pooling="mean", dim=4, tokenizer_sha256="t1",
)  # fmt: skip


def _dictionary(*names: str):
    return from_table(pa.table({"concept_id": [f"D{i}" for i in range(len(names))],
                                "name": list(names)}), "t")  # fmt: skip


def test_the_key_changes_with_the_dictionary_or_the_model_and_nothing_else():
    d = _dictionary("asthma", "gout")
    key = cache.index_key(d, INFO)
    assert cache.index_key(_dictionary("asthma", "gout"), replace(INFO, source="other")) == key
    assert cache.index_key(_dictionary("asthma", "gouts"), INFO) != key
    for change in ({"weights_sha256": "w2"}, {"tokenizer_sha256": "t2"}, {"pooling": "cls"},
                   {"max_length": 64}):  # fmt: skip
        assert cache.index_key(d, replace(INFO, **change)) != key


def test_saved_vectors_are_read_back_and_bad_entries_are_not(tmp_path):
    vectors = np.arange(8, dtype=np.float16).reshape(2, 4)
    assert cache.load_vectors("k", 2, tmp_path) is None  # nothing cached yet
    cache.save_vectors("k", vectors, {"names": 2}, tmp_path)
    np.testing.assert_array_equal(cache.load_vectors("k", 2, tmp_path), vectors)
    assert cache.load_vectors("k", 3, tmp_path) is None  # not this dictionary's size
    (cache.index_dir("k", tmp_path) / cache.VECTORS).write_bytes(b"not numpy")
    assert cache.load_vectors("k", 2, tmp_path) is None
    # a second writer of the same key keeps the first one's files and leaves no temp folder
    cache.save_vectors("k2", vectors, {}, tmp_path)
    cache.save_vectors("k2", vectors, {}, tmp_path)
    assert sorted(p.name for p in (tmp_path / "link-index").iterdir()) == ["k", "k2"]
