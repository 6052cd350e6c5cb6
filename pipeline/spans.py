"""Token predictions → character spans (pure, vectorised numpy).

Follows the aggregation strategies of transformers' token-classification pipeline
(``simple``, ``first``, ``average``, ``max``) with two deliberate differences:
words come from the tokenizer's own ``word_ids`` instead of a string-length
heuristic, and span edges never include whitespace (byte-level BPE tokens carry
their leading space).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class LabelScheme:
    """Per label id: its entity type index, whether it begins an entity (``B-``),
    and whether it is outside any entity (``O``). Works for BIO/IOB2 and IO."""

    tags: tuple[str, ...]  # distinct entity types, "O" included when present
    tag_of: np.ndarray  # label id → index into tags
    is_begin: np.ndarray  # label id → bool
    is_outside: np.ndarray  # label id → bool

    @classmethod
    def from_id2label(cls, id2label: dict[int, str]) -> LabelScheme:
        n = max(id2label) + 1 if id2label else 0
        if sorted(id2label) != list(range(n)):
            raise ValueError(f"id2label ids must be 0..{n - 1}, got {sorted(id2label)}")
        tags: list[str] = []
        tag_of = np.zeros(n, dtype=np.int64)
        is_begin = np.zeros(n, dtype=bool)
        for i in range(n):
            name = id2label[i]
            if name.startswith("B-"):
                tag, begin = name[2:], True
            elif name.startswith("I-"):
                tag, begin = name[2:], False
            else:  # "O", or an IO-scheme type such as "Disease"
                tag, begin = name, False
            if tag not in tags:
                tags.append(tag)
            tag_of[i] = tags.index(tag)
            is_begin[i] = begin
        is_outside = np.array([tags[tag_of[i]] == "O" for i in range(n)], dtype=bool)
        return cls(tuple(tags), tag_of, is_begin, is_outside)


@dataclass(frozen=True)
class Spans:
    """Entities of one document: character offsets (end exclusive), label, score."""

    start: np.ndarray
    end: np.ndarray
    label: list[str]
    score: np.ndarray

    def __len__(self) -> int:
        return len(self.label)


def _word_starts(word_ids: np.ndarray) -> np.ndarray:
    """Index of the first token of each word (a token whose word id differs from the
    previous token's, or has none (-1), starts a word)."""
    n = len(word_ids)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (word_ids[1:] != word_ids[:-1]) | (word_ids[1:] < 0)
    return np.flatnonzero(new)


def aggregate_words(
    token_label: np.ndarray,
    token_score: np.ndarray,
    word_ids: np.ndarray,
    strategy: str,
    probs: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (a word, or a token for ``simple``): label id, score, first and last
    token index. ``token_label``/``token_score`` are each token's argmax label and its
    probability; ``average`` also needs the full ``[n_tokens, n_labels]`` ``probs``."""
    n = len(token_label)
    if strategy == "simple":
        idx = np.arange(n)
        return token_label, token_score, idx, idx
    starts = _word_starts(word_ids)
    lasts = np.append(starts[1:] - 1, n - 1)
    if strategy == "first":
        return token_label[starts], token_score[starts], starts, lasts
    if strategy == "max":
        word_of = np.repeat(np.arange(len(starts)), lasts - starts + 1)
        # Sort by (word, -score), stable: the first maximal token of each word wins.
        order = np.lexsort((-token_score, word_of))
        best = order[starts]  # each word's block begins at its first token's index
        return token_label[best], token_score[best], starts, lasts
    if strategy == "average":
        if probs is None:
            raise ValueError("the average strategy needs full label probabilities")
        counts = (lasts - starts + 1)[:, None]
        mean = np.add.reduceat(probs, starts, axis=0) / counts
        label = mean.argmax(axis=1)
        return label, mean[np.arange(len(starts)), label], starts, lasts
    raise ValueError(f"unknown aggregation strategy {strategy!r}")


def decode_spans(
    token_label: np.ndarray,
    token_score: np.ndarray,
    word_ids: np.ndarray,
    tok_starts: np.ndarray,
    tok_ends: np.ndarray,
    scheme: LabelScheme,
    strategy: str,
    text: str,
    probs: np.ndarray | None = None,
) -> Spans:
    """Group a document's token predictions into entity spans.

    Consecutive units of the same type join one entity unless a unit is ``B-``;
    the entity score is the mean of its units' scores; ``O`` groups are dropped.
    Offsets are characters of ``text``, trimmed of surrounding whitespace.
    """
    if len(token_label) == 0:
        return Spans(np.zeros(0, np.int32), np.zeros(0, np.int32), [], np.zeros(0, np.float32))
    label, score, first_tok, last_tok = aggregate_words(
        token_label, token_score, word_ids, strategy, probs
    )
    tag = scheme.tag_of[label]
    new_group = np.ones(len(label), dtype=bool)
    new_group[1:] = (tag[1:] != tag[:-1]) | scheme.is_begin[label[1:]]
    g_start = np.flatnonzero(new_group)
    g_last = np.append(g_start[1:] - 1, len(label) - 1)
    g_score = np.add.reduceat(score.astype(np.float64), g_start) / (g_last - g_start + 1)
    keep = ~scheme.is_outside[label[g_start]]
    starts = tok_starts[first_tok[g_start[keep]]]
    ends = tok_ends[last_tok[g_last[keep]]]
    tags = [scheme.tags[t] for t in tag[g_start[keep]]]
    out_s, out_e, out_l, out_sc = [], [], [], []
    for s, e, t, sc in zip(starts.tolist(), ends.tolist(), tags, g_score[keep].tolist()):
        s, e = trim_whitespace(text, s, e)
        if e > s:
            out_s.append(s)
            out_e.append(e)
            out_l.append(t)
            out_sc.append(sc)
    return Spans(
        np.asarray(out_s, np.int32),
        np.asarray(out_e, np.int32),
        out_l,
        np.asarray(out_sc, np.float32),
    )


def trim_whitespace(text: str, start: int, end: int) -> tuple[int, int]:
    """Shrink ``[start, end)`` so it neither starts nor ends on whitespace."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
