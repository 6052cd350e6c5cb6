"""Constrained decoding: the best label sequence a label scheme allows (pure numpy).

Greedy decoding takes each word's most probable label, so a multi-word entity whose
middle word leans to ``O`` comes out cut in two. Here the label sequence over a
document's units (words, or tokens for ``simple``) maximises the sum of log
probabilities among the sequences the scheme allows: no ``I-X`` after ``O`` or after
another type, and in BIOES/BILOU an entity opened by ``B-X`` closes with ``E-X``/``L-X``.
IO labels allow every sequence. Ties go to the lexicographically smallest sequence (by
label id), which is the greedy one whenever greedy is allowed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # spans imports this module
    from pipeline.core.spans import LabelScheme

_FLOOR = 1e-30  # probabilities below this count as this (log 0 would make every path -inf)


def transitions(scheme: LabelScheme) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(start_ok[n], allowed[n, n], end_ok[n])``: which label may open a document,
    follow another (``allowed[prev, next]``) and close a document."""
    tag, begin, end, outside = scheme.tag_of, scheme.is_begin, scheme.is_end, scheme.is_outside
    n_tags = len(scheme.tags)
    inside = ~begin & ~outside  # I-, E-, L-, or a plain IO type
    # A type is BIO-like when it has a begin label (IO types have none), and must close
    # explicitly when it has an end label that does not begin (E-, L-).
    bio = np.zeros(n_tags, bool)
    closes = np.zeros(n_tags, bool)
    np.logical_or.at(bio, tag, begin)
    np.logical_or.at(closes, tag, end & ~begin & ~outside)
    continues = inside & bio[tag]  # needs an open entity of its type before it
    opened = ~outside & ~end & closes[tag]  # needs a continuation of its type after it
    same = tag[:, None] == tag[None, :]
    open_before = ~outside & ~end  # an entity still open after this label
    allowed = np.ones((len(tag), len(tag)), bool)
    allowed[:, continues] = (same & open_before[:, None])[:, continues]
    allowed[opened, :] &= (same & continues[None, :])[opened, :]
    return ~continues, allowed, ~opened


def viterbi(probs: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """Best allowed label id per unit of one document (``probs``: units x labels, each
    unit's label probabilities). An empty document gives an empty array."""
    return viterbi_documents(probs, np.array([0, len(probs)]), scheme)


def viterbi_documents(probs: np.ndarray, bounds: np.ndarray, scheme: LabelScheme) -> np.ndarray:
    """:func:`viterbi` over documents laid end to end (document ``i`` owns units
    ``bounds[i]:bounds[i + 1]``). Documents whose greedy labels are already allowed keep
    them (they are the optimum); the others are decoded together, one step per unit of
    the longest, all documents at once."""
    n = len(probs)
    out = probs.argmax(axis=1) if n else np.zeros(0, np.int64)
    if n == 0:
        return out
    start_ok, allowed, end_ok = transitions(scheme)
    lo, hi = bounds[:-1], bounds[1:]
    nonempty = hi > lo
    bad = np.zeros(n, bool)  # a unit whose greedy label may not follow the one before
    bad[1:] = ~allowed[out[:-1], out[1:]]
    first = np.zeros(n, bool)
    first[lo[nonempty]] = True
    bad &= ~first
    bad[lo[nonempty]] = ~start_ok[out[lo[nonempty]]]
    bad[hi[nonempty] - 1] |= ~end_ok[out[hi[nonempty] - 1]]
    n_bad = np.concatenate([[0], np.cumsum(bad)])
    docs = np.flatnonzero(n_bad[hi] > n_bad[lo])
    if len(docs) == 0:
        return out
    lengths = hi[docs] - lo[docs]
    width = int(lengths.max())
    # (docs, positions, labels), right-padded: padding neither scores nor constrains.
    pos = np.arange(width)
    valid = pos[None, :] < lengths[:, None]
    index = np.where(valid, lo[docs][:, None] + pos[None, :], 0)
    scores = np.log(np.maximum(probs[index], _FLOOR), dtype=np.float64)
    scores[~valid] = 0.0
    penalty = np.where(allowed, 0.0, -np.inf)
    # Backward pass: best[t, y] = best score of units t.. given label y at t.
    best = np.zeros_like(scores)
    best[np.arange(len(docs)), lengths - 1] = np.where(end_ok, 0.0, -np.inf)
    for t in range(width - 2, -1, -1):
        nxt = scores[:, t + 1] + best[:, t + 1]  # (docs, labels)
        step = (penalty[None, :, :] + nxt[:, None, :]).max(axis=2)
        live = valid[:, t + 1]
        best[live, t] = step[live]
    total = scores + best
    # Forward pass: the smallest label id among the best at each step.
    path = np.zeros((len(docs), width), np.int64)
    path[:, 0] = _first_max(total[:, 0] + np.where(start_ok, 0.0, -np.inf))
    for t in range(1, width):
        prev = path[:, t - 1]
        path[:, t] = _first_max(total[:, t] + penalty[prev])
    out[index[valid]] = path[valid]
    return out


def _first_max(x: np.ndarray) -> np.ndarray:
    """Index of the first maximum of each row (argmax's own tie rule)."""
    return x.argmax(axis=1)
