"""Windows over token sequences: coverage, overlap and ownership, on hand-built sizes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.windows import effective_stride, window_char_spans, window_owner, window_starts


@pytest.mark.parametrize("window,stride", [(10, 3), (10, 5), (10, 0), (7, 6), (1, 0), (510, 128)])
@pytest.mark.parametrize("n", [0, 1, 9, 10, 11, 17, 23, 100, 1337])
def test_windows_cover_every_token_and_overlap_by_at_least_the_stride(n, window, stride):
    starts = window_starts(n, window, stride)
    if n == 0:
        assert len(starts) == 0
        return
    ends = np.minimum(starts + window, n)
    covered = np.zeros(n, dtype=int)
    for s, e in zip(starts, ends):
        covered[s:e] += 1
    assert covered.min() >= 1
    assert starts[0] == 0 and ends[-1] == n
    assert np.all(np.diff(starts) > 0)
    eff = effective_stride(window, stride)
    # consecutive windows overlap by at least the effective stride
    assert np.all(ends[:-1] - starts[1:] >= eff)
    if n >= window:
        assert np.all(ends - starts == window)  # no short tail window


def test_stride_is_clamped_to_half_a_window():
    assert effective_stride(62, 128) == 31
    assert effective_stride(510, 128) == 128
    with pytest.raises(ValueError):
        effective_stride(0, 1)


def _brute_owner(n, starts, window):
    owner = []
    for i in range(n):
        best, best_w = -1, -1
        for w, s in enumerate(starts):
            e = min(s + window, n)
            if s <= i < e:
                ctx = min(i - s, e - 1 - i)
                if ctx > best:
                    best, best_w = ctx, w
        owner.append(best_w)
    return np.array(owner)


@pytest.mark.parametrize("n,window,stride", [(17, 10, 5), (40, 8, 4), (23, 10, 3), (5, 10, 2)])
def test_owner_is_the_window_with_most_context(n, window, stride):
    starts = window_starts(n, window, stride)
    np.testing.assert_array_equal(window_owner(n, starts, window), _brute_owner(n, starts, window))


def test_owner_switches_in_the_middle_of_an_overlap():
    # windows [0,10) and [6,16) (n=16, stride 4): overlap tokens 6..9
    starts = window_starts(16, 10, 4)
    assert starts.tolist() == [0, 6]
    owner = window_owner(16, starts, 10)
    # token 7: context 2 in window 0 (right side), 1 in window 1 (left): window 0
    # token 8: context 1 in window 0, 2 in window 1: window 1
    assert owner.tolist() == [0] * 8 + [1] * 8


def test_window_char_spans_use_token_offsets():
    tok_starts = np.array([0, 4, 8, 12, 16])
    tok_ends = np.array([3, 7, 11, 15, 19])
    s, e, n = window_char_spans(np.array([0, 2]), 3, tok_starts, tok_ends)
    assert s.tolist() == [0, 8] and e.tolist() == [11, 19] and n.tolist() == [3, 3]
