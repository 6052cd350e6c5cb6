"""Token-budget packing of windows into forward passes (pure)."""

from __future__ import annotations

import numpy as np


def pack_by_token_budget(
    lengths: np.ndarray, budget: int, multiple_of: int = 1
) -> list[np.ndarray]:
    """Split window indices into batches whose padded size fits ``budget`` tokens.

    Windows are sorted longest first, so each batch holds windows of similar length
    (little padding) and the largest batch comes first (memory errors show at once).
    A batch is padded to its longest window rounded up to ``multiple_of`` tokens;
    its padded size ``len(batch) * padded_len`` stays within ``budget`` unless one
    window alone exceeds it. Returns index arrays; every index appears exactly once.
    """
    if budget < 1:
        raise ValueError(f"token budget must be >= 1 token, got {budget}")
    order = np.argsort(-np.asarray(lengths), kind="stable")
    batches: list[np.ndarray] = []
    i = 0
    while i < len(order):
        longest = int(lengths[order[i]])
        padded = padded_length(longest, multiple_of)
        size = max(1, budget // max(padded, 1))
        batches.append(order[i : i + size])
        i += size
    return batches


def padded_length(n: int, multiple_of: int) -> int:
    """``n`` rounded up to a multiple of ``multiple_of`` tokens."""
    return -(-n // multiple_of) * multiple_of


def padding_fraction(lengths: np.ndarray, batches: list[np.ndarray], multiple_of: int = 1) -> float:
    """Share of computed token positions that are padding."""
    real = int(np.sum(lengths))
    computed = sum(
        len(b) * padded_length(int(np.max(lengths[b])), multiple_of) for b in batches if len(b)
    )
    return 0.0 if computed == 0 else 1.0 - real / computed
