"""Gold character spans ↔ token BIO label ids, through a tokenizer's offsets (pure numpy).

A document is tokenized once, as the annotate job does (no special tokens, no
truncation); its tokens carry character offsets into the original text. Labels are
computed over the whole document and every window copies its slice of them, so a
span cut by a window edge starts that window with ``I-`` exactly as it reads in the
whole-document labelling. Offsets are characters (end exclusive); windows are tokens.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from pipeline.core.spans import LabelScheme, Spans, TokenPredictions, decode_spans

OUTSIDE = "O"
IGNORE = -100  # label id that the loss skips (special tokens, padding)


def bio_labels(entity_types: Iterable[str]) -> list[str]:
    """``O`` (id 0), then ``B-t``, ``I-t`` for each entity type ``t`` in sorted order."""
    out = [OUTSIDE]
    for t in sorted(set(entity_types)):
        out += [f"B-{t}", f"I-{t}"]
    return out


@dataclass
class AlignmentReport:
    """What became of the gold spans (counts of spans). Only ``aligned`` spans are labelled;
    ``boundary_mismatch`` and ``word_mismatch`` are aligned spans that decoding cannot give
    back exactly, so they bound the strict F1 a model trained on these labels can reach."""

    n_spans: int = 0
    aligned: int = 0  # labelled on at least one token
    unaligned: int = 0  # no token overlaps the span (whitespace only, empty, past the text)
    boundary_mismatch: int = 0  # an edge is not a token edge (mid-token, or on whitespace)
    word_mismatch: int = 0  # an edge falls inside a word: "first" aggregation widens or drops it
    overlap_conflict: int = 0  # shares a token with an earlier span; left unlabelled
    unknown_label: int = 0  # its type is not among the model's labels; left unlabelled
    no_document: int = 0  # its doc_id is not in the documents table

    def add(self, other: AlignmentReport) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


def align_spans(
    tok_starts: np.ndarray,
    tok_ends: np.ndarray,
    word_ids: np.ndarray,
    span_starts: Sequence[int],
    span_ends: Sequence[int],
    span_types: Sequence[str],
    label2id: dict[str, int],
) -> tuple[np.ndarray, AlignmentReport]:
    """BIO label id of every token of one document, and what became of its spans.

    A token belongs to a span when their character ranges overlap (so a token that
    straddles a span edge counts as inside), and so does a token of no width between two
    that do; the first such token gets ``B-``, the others ``I-``. Spans are taken in order
    of start (longer first on ties); one that would relabel a token already claimed by
    another span is skipped and counted.
    """
    tok_starts = np.asarray(tok_starts)
    tok_ends = np.asarray(tok_ends)
    word_ids = np.asarray(word_ids)
    n = len(tok_starts)
    labels = np.full(n, label2id[OUTSIDE], dtype=np.int64)
    report = AlignmentReport(n_spans=len(span_types))
    nonempty = tok_ends > tok_starts
    order = sorted(range(len(span_types)), key=lambda i: (span_starts[i], -span_ends[i]))
    for i in order:
        s, e, t = int(span_starts[i]), int(span_ends[i]), span_types[i]
        if f"B-{t}" not in label2id or f"I-{t}" not in label2id:
            report.unknown_label += 1
            continue
        overlaps = nonempty & (tok_starts < e) & (tok_ends > s)
        idx = np.flatnonzero(overlaps) if e > s else []
        if len(idx) == 0:
            report.unaligned += 1
            continue
        first, last = int(idx[0]), int(idx[-1])
        # Byte-level BPE gives a lone space token no width: inside the span it must read
        # I-, or training sees B, O, I and decoding splits the span in two.
        between = overlaps[first : last + 1] | ~nonempty[first : last + 1]
        idx = first + np.flatnonzero(between)
        if (labels[idx] != label2id[OUTSIDE]).any():
            report.overlap_conflict += 1
            continue
        labels[idx] = label2id[f"I-{t}"]
        labels[first] = label2id[f"B-{t}"]
        report.aligned += 1
        if tok_starts[first] != s or tok_ends[last] != e:
            report.boundary_mismatch += 1
        split_start = first > 0 and word_ids[first] >= 0 and word_ids[first - 1] == word_ids[first]
        split_end = last + 1 < n and word_ids[last] >= 0 and word_ids[last + 1] == word_ids[last]
        if split_start or split_end:
            report.word_mismatch += 1
    return labels, report


def window_labels(
    doc_labels: np.ndarray, start: int, length: int, n_prefix: int, n_suffix: int
) -> np.ndarray:
    """Label ids of one window laid out as ``[prefix specials] + tokens[start:start+length]
    + [suffix specials]``: special tokens get ``IGNORE``, content tokens keep their
    whole-document label (so a span continuing from the previous window starts with I-)."""
    return np.concatenate(
        [
            np.full(n_prefix, IGNORE, dtype=np.int64),
            np.asarray(doc_labels[start : start + length], dtype=np.int64),
            np.full(n_suffix, IGNORE, dtype=np.int64),
        ]
    )


def labels_to_spans(
    token_labels: np.ndarray,
    word_ids: np.ndarray,
    tok_starts: np.ndarray,
    tok_ends: np.ndarray,
    id2label: dict[int, str],
    text: str,
    strategy: str = "first",
) -> Spans:
    """Token label ids back to character spans, with the annotate job's decoder (every
    token's score is 1)."""
    token_labels = np.asarray(token_labels, dtype=np.int64)
    pred = TokenPredictions(
        token_labels,
        np.ones(len(token_labels), dtype=np.float32),
        np.asarray(word_ids),
        np.asarray(tok_starts),
        np.asarray(tok_ends),
    )
    return decode_spans(pred, LabelScheme.from_id2label(id2label), strategy, text)
