"""Token-budget packing on hand-built lengths."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.batching import pack_by_token_budget, padded_length, padding_fraction


@pytest.mark.parametrize("multiple", [1, 8])
def test_every_window_once_and_budget_respected(multiple):
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 512, size=500)
    batches = pack_by_token_budget(lengths, 4096, multiple)
    flat = np.concatenate(batches)
    assert sorted(flat.tolist()) == list(range(500))
    for b in batches:
        width = padded_length(int(lengths[b].max()), multiple)
        assert len(b) * width <= 4096


def test_a_window_larger_than_the_budget_gets_its_own_batch():
    batches = pack_by_token_budget(np.array([100, 5, 5]), 50)
    assert [b.tolist() for b in batches] == [[0], [1, 2]]


def test_sorting_keeps_padding_small():
    rng = np.random.default_rng(1)
    lengths = rng.integers(50, 512, size=2000)
    batches = pack_by_token_budget(lengths, 16384)
    assert padding_fraction(lengths, batches) < 0.05
    # unsorted batches of the same sizes waste far more
    naive = np.array_split(np.arange(2000), len(batches))
    assert padding_fraction(lengths, naive) > 0.2


def test_padding_fraction_by_hand():
    # one batch of lengths 4 and 2, padded to 4: 6 real of 8 computed
    assert padding_fraction(np.array([4, 2]), [np.array([0, 1])]) == pytest.approx(0.25)
    # rounded to multiples of 8: 6 real of 16
    assert padding_fraction(np.array([4, 2]), [np.array([0, 1])], 8) == pytest.approx(10 / 16)
