"""Windows over token sequences: coverage, overlap and ownership, on hand-built sizes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.core.windows import WindowPlan, effective_stride, window_char_spans, window_starts


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


def owner_from_ranges(plan: WindowPlan, d: int) -> np.ndarray:
    """Document ``d``'s token owners (window numbers within the document), from the
    plan's owned ranges; -1 where no window claims a token, 9 where two do."""
    ws = np.flatnonzero(plan.doc == d)
    n = int((plan.start[ws] + plan.length[ws]).max()) if len(ws) else 0
    owner = np.full(n, -1)
    lo, hi = plan.owned()
    for k, w in enumerate(ws.tolist()):
        owner[lo[w] : hi[w]] = np.where(owner[lo[w] : hi[w]] == -1, k, 9)
    return owner


@pytest.mark.parametrize("n,window,stride", [(17, 10, 5), (40, 8, 4), (23, 10, 3), (5, 10, 2)])
def test_owner_is_the_window_with_most_context(n, window, stride):
    plan = WindowPlan.build([n], window, stride)
    want = _brute_owner(n, window_starts(n, window, stride), window)
    np.testing.assert_array_equal(owner_from_ranges(plan, 0), want)


def test_owned_ranges_match_the_most_context_rule_on_random_plans():
    # Many documents in one plan (ranges are computed for all windows at once), sizes
    # around the window (one window, two, the end-aligned last one overlapping three).
    rng = np.random.default_rng(7)
    for _ in range(60):
        window = int(rng.integers(1, 40))
        stride = int(rng.integers(0, window + 3))
        counts = rng.integers(0, 4 * window + 2, size=8).tolist()
        plan = WindowPlan.build(counts, window, stride)
        for d, n in enumerate(counts):
            want = _brute_owner(n, window_starts(n, window, stride), window)
            np.testing.assert_array_equal(owner_from_ranges(plan, d), want)


def test_owner_switches_in_the_middle_of_an_overlap():
    # windows [0,10) and [6,16) (n=16, stride 4): overlap tokens 6..9
    plan = WindowPlan.build([16], 10, 4)
    assert plan.start.tolist() == [0, 6]
    # token 7: context 2 in window 0 (right side), 1 in window 1 (left): window 0
    # token 8: context 1 in window 0, 2 in window 1: window 1
    assert owner_from_ranges(plan, 0).tolist() == [0] * 8 + [1] * 8


def test_window_char_spans_use_token_offsets():
    tok_starts = np.array([0, 4, 8, 12, 16])
    tok_ends = np.array([3, 7, 11, 15, 19])
    s, e, n = window_char_spans(np.array([0, 2]), 3, tok_starts, tok_ends)
    assert s.tolist() == [0, 8] and e.tolist() == [11, 19] and n.tolist() == [3, 3]
