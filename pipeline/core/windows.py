"""Overlapping token windows over whole documents (pure).

A document is tokenized once, without special tokens; windows are index ranges
into that token sequence, so character offsets always refer to the original text.
Lengths here are in tokens.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def effective_stride(window: int, stride: int) -> int:
    """The overlap actually used: at most half a window, so a token lies in at most
    two consecutive windows (except near the end-aligned last window)."""
    if window < 1:
        raise ValueError(f"window must hold at least 1 token, got {window}")
    if stride < 0:
        raise ValueError(f"stride must be >= 0 tokens, got {stride}")
    return min(stride, window // 2)


def window_starts(n_tokens: int, window: int, stride: int) -> np.ndarray:
    """Start index of each window of ``window`` content tokens overlapping by ``stride``.

    Consecutive windows advance by ``window - stride`` tokens; the last window is
    aligned to end at the last token, so every window but a short document's only
    one is full length and every token lies in at least one window.
    """
    if n_tokens <= 0:
        return np.zeros(0, dtype=np.int64)
    if n_tokens <= window:
        return np.zeros(1, dtype=np.int64)
    step = window - effective_stride(window, stride)
    starts = list(range(0, n_tokens - window, step))
    starts.append(n_tokens - window)
    return np.asarray(starts, dtype=np.int64)


def window_char_spans(
    starts: np.ndarray, window: int, tok_starts: np.ndarray, tok_ends: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Character start, character end (exclusive) and token count of each window."""
    n = len(tok_starts)
    ends = np.minimum(starts + window, n)
    return tok_starts[starts], tok_ends[ends - 1], (ends - starts)


@dataclass(frozen=True)
class WindowPlan:
    """Every window of a batch of documents: its document and token range."""

    doc: np.ndarray  # document index within the batch
    start: np.ndarray  # first content token
    length: np.ndarray  # content tokens
    window: int  # content tokens per full window

    @classmethod
    def build(cls, token_counts: list[int], window: int, stride: int) -> WindowPlan:
        docs, starts, lengths = [], [], []
        for d, n in enumerate(token_counts):
            s = window_starts(n, window, stride)
            docs.append(np.full(len(s), d, dtype=np.int64))
            starts.append(s)
            lengths.append(np.minimum(s + window, n) - s)
        cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, np.int64)  # noqa: E731
        return cls(cat(docs), cat(starts), cat(lengths), window)

    def owned(self) -> tuple[np.ndarray, np.ndarray]:
        """Per window, the document tokens ``[lo, hi)`` that take its prediction: each
        token takes the window where it has the most context on its narrower side, the
        earlier one on a tie. A document of several windows has only full windows, and
        there that is the window whose centre is nearest, so each window owns one run of
        tokens, up to halfway to the next window's centre."""
        hi = self.start + self.length  # a document's last window runs to its end
        nxt = np.flatnonzero(self.doc[1:] == self.doc[:-1])  # windows followed in their doc
        # Centres s + (window - 1) / 2: the token exactly halfway goes to the earlier one.
        hi[nxt] = (self.start[nxt] + self.start[nxt + 1] + self.window - 1) // 2 + 1
        lo = np.zeros_like(hi)
        lo[nxt + 1] = hi[nxt]
        return lo, hi

    def windows_by_doc(self, n_docs: int) -> list[np.ndarray]:
        """Every document's window indices, in window order: one sort for the whole
        batch, not a scan of all its windows per document."""
        counts = np.bincount(self.doc, minlength=n_docs)
        return np.split(np.argsort(self.doc, kind="stable"), np.cumsum(counts)[:-1])
