"""Output folders built by hand: two generations of an overwrite, and what a finished
promotion must leave."""

from __future__ import annotations

import pyarrow as pa

from pipeline.storage import files as storage
from pipeline.storage.output import OutputFolder


def generation(root, marker, tables, shards, failures=()):
    """An output generation: every file holds (or is named after) ``marker``."""
    storage.write_json(storage.join(root, "_manifest.json"), {"fingerprint": marker})
    storage.write_json(storage.join(root, "run.json"), {"marker": marker})
    for k in shards:
        storage.write_json(storage.join(root, "_commits", f"{k}.json"), {"marker": marker})
        for t in tables:
            table = pa.table({"x": [f"{marker}-{k}"]})
            storage.write_parquet_table(storage.join(root, t, f"{k}.parquet"), table)
    for k in failures:
        storage.write_json(storage.join(root, "_failures", f"{k}.json"), {"marker": marker})


def old_and_new(out):
    # The new configuration has no embeddings, one shard fewer, and no failures.
    generation(out, "old", ["documents", "embeddings"], ["k1", "k2", "k3"], failures=["k9"])
    generation(storage.join(out, "_next"), "new", ["documents", "entities"], ["k1", "k2"])


def assert_only_new(out, folders_too=True):
    """``folders_too``: no empty folder left either (SeaweedFS keeps the folders of
    deleted objects: there, files only)."""
    for t in ("documents", "entities"):
        x = storage.read_parquet_table(storage.join(out, t)).column("x").to_pylist()
        assert sorted(x) == ["new-k1", "new-k2"], (t, x)
    assert OutputFolder(out).committed_keys() == {"k1", "k2"}
    for item in ("embeddings", "_failures", "_next"):
        assert not storage.list_files(storage.join(out, item)), item
        assert not folders_too or not storage.exists(storage.join(out, item)), item
    assert storage.read_json(storage.join(out, "run.json"))["marker"] == "new"
    assert storage.read_json(storage.join(out, "_manifest.json"))["fingerprint"] == "new"
