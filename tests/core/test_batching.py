"""Token-budget packing on hand-built lengths."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.batching import pack_by_token_budget, padded_length, padding_fraction


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


@pytest.mark.parametrize("multiple", [1, 8])
def test_a_padding_cap_holds_in_every_batch_that_passed_its_minimum(multiple):
    rng = np.random.default_rng(2)
    lengths = rng.integers(3, 512, size=300)  # few windows of widely varying length
    loose = pack_by_token_budget(lengths, 16384, multiple)
    capped = pack_by_token_budget(lengths, 16384, multiple, max_padding=0.02, min_tokens=600)
    assert sorted(np.concatenate(capped).tolist()) == list(range(300))
    for b in capped:
        width = padded_length(int(lengths[b].max()), multiple)
        assert len(b) * width <= 16384
        share = 1 - lengths[b].sum() / (len(b) * width)
        # Over the cap only while the batch is still under its minimum size.
        assert share <= 0.02 + 1e-12 or len(b) * width <= 600 or len(b) == 1
    assert padding_fraction(lengths, capped, multiple) < 0.5 * padding_fraction(
        lengths, loose, multiple
    )


def test_a_padding_cap_by_hand():
    lengths = np.array([100, 99, 90, 89, 10])
    # 100 and 99 pad 1 of 200 (0.5%); adding 90 would pad 11 of 300 (3.7%).
    got = pack_by_token_budget(lengths, 1000, max_padding=0.02)
    assert [b.tolist() for b in got] == [[0, 1], [2, 3], [4]]
    # A minimum of 300 padded tokens keeps the third window in the first batch, and
    # the last two together (178 padded tokens).
    got = pack_by_token_budget(lengths, 1000, max_padding=0.02, min_tokens=300)
    assert [b.tolist() for b in got] == [[0, 1, 2], [3, 4]]
