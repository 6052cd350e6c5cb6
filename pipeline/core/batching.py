"""Token-budget packing of windows into forward passes (pure)."""

from __future__ import annotations

import numpy as np


def pack_by_token_budget(
    lengths: np.ndarray,
    budget: int,
    multiple_of: int = 1,
    max_padding: float | None = None,
    min_tokens: int = 0,
) -> list[np.ndarray]:
    """Split window indices into batches whose padded size fits ``budget`` tokens.

    Windows are sorted longest first, so each batch holds windows of similar length
    (little padding) and the largest batch comes first (memory errors show at once).
    A batch is padded to its longest window rounded up to ``multiple_of`` tokens;
    its padded size ``len(batch) * padded_len`` stays within ``budget`` unless one
    window alone exceeds it. With ``max_padding``, a batch also ends before the window
    that would make more than that share of it padding, once it holds ``min_tokens``
    padded tokens: where a pass costs per token whatever its size (a CPU), small passes
    are cheaper than padded ones. Returns index arrays; every index appears exactly once.
    """
    if budget < 1:
        raise ValueError(f"token budget must be >= 1 token, got {budget}")
    lengths = np.asarray(lengths)
    order = np.argsort(-lengths, kind="stable")
    batches: list[np.ndarray] = []
    i = 0
    while i < len(order):
        padded = max(padded_length(int(lengths[order[i]]), multiple_of), 1)
        size = max(1, budget // padded)
        if max_padding is not None:
            part = lengths[order[i : i + size]]
            n = np.arange(1, len(part) + 1)
            share = np.cumsum(padded - part) / (n * padded)  # grows as windows shorten
            fits = max(int(np.sum(share <= max_padding)), int(np.sum(n * padded <= min_tokens)))
            size = max(1, fits)
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
