"""The dataset graph cuts a shard into blocks of the batch size, on a real local Ray."""

from __future__ import annotations

import numpy as np
import pytest
import ray

from pipeline import graph


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _one_shard() -> ray.data.Dataset:
    def read(batch: dict) -> object:  # a shard read as three batches of ten documents
        for i in range(3):
            yield {"doc": np.arange(10) + 10 * i}

    items = ray.data.from_items([{"shard": "s0"}])
    return items.map_batches(read, batch_size=1, num_cpus=graph.LIGHT_CPUS)


def test_a_shard_becomes_blocks_of_the_batch_size(local_ray) -> None:
    # Why the cut is needed: the reader's batches of one shard leave it as one block.
    assert _one_shard().materialize().num_blocks() == 1
    cut = graph._blocks_of(_one_shard(), 10).materialize()
    assert cut.num_blocks() == 3
    assert sorted(cut.to_pandas()["doc"].tolist()) == list(range(30))
