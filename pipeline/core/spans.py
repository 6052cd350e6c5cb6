"""Token predictions → character spans (pure, vectorised numpy).

Follows the aggregation strategies of transformers' token-classification pipeline
(``simple``, ``first``, ``average``, ``max``) with two deliberate differences:
words come from the tokenizer's own ``word_ids`` instead of a string-length
heuristic, and span edges never include whitespace (byte-level BPE tokens carry
their leading space) nor split a character from its combining marks.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

import numpy as np

from pipeline.core.viterbi import viterbi_documents

# Prefixes of BIO/IOB2, BIOES/IOBES and BILOU: S-/U- is a one-token entity, E-/L- its last.
_BEGINS, _INSIDES, _ENDS = frozenset("BSU"), frozenset("IEL"), frozenset("ESLU")
_PREFIXED = re.compile(r"([BIESLU])[-_](.*)", re.DOTALL)
OUTSIDE_LABEL = "O"
UNTYPED = "ENTITY"  # the type of bare "B"/"I"/... labels, which name none


def _parse_label(name: str) -> tuple[str, str, str]:
    """``(shape, prefix, type)`` of one label: shape is ``outside``, ``prefixed``
    (``B-X``, ``I_X``, ``S-X``...), ``bare`` (``B``, ``I``...) or ``plain`` (an IO type
    such as ``Disease``), or ``bad`` when it cannot be read."""
    if name == OUTSIDE_LABEL:
        return "outside", "", OUTSIDE_LABEL
    if len(name) == 1 and name in _BEGINS | _INSIDES:
        return "bare", name, UNTYPED
    m = _PREFIXED.fullmatch(name)
    if m:
        # no type ("B-"), or the type "O", which would read as outside
        return ("bad" if m[2] in ("", OUTSIDE_LABEL) else "prefixed"), m[1], m[2]
    if not name.strip() or name != name.strip():
        return "bad", "", name
    return "plain", "I", name


@dataclass(frozen=True)
class LabelScheme:
    """Per label id: its entity type index, whether it begins an entity, whether it ends
    one, and whether it is outside any entity (``O``).

    Reads BIO/IOB2, BIOES/IOBES and BILOU (prefixes ``B I E S`` or ``B I L U``, separated
    from the type by ``-`` or ``_``), IO (plain types such as ``Disease`` besides ``O``:
    each maximal run of one type is an entity) and untyped labels (bare ``B``, ``I``,
    ``E``, ``S``, as many BioBERT NCBI-disease checkpoints have): their entities get the
    type ``"ENTITY"``. As seqeval reads IOBES, an entity also ends after an ``E-``/``S-``
    (``L-``/``U-``) unit, so ``S-X S-X`` is two entities.

    Raises ``ValueError`` naming the labels when the set cannot be read that way: a label
    of no known shape, typed and untyped or prefixed and plain labels mixed, or no ``O``.
    """

    tags: tuple[str, ...]  # distinct entity types, "O" included when present
    tag_of: np.ndarray  # label id → index into tags
    is_begin: np.ndarray  # label id → bool: B-, S-, U-
    is_outside: np.ndarray  # label id → bool
    is_end: np.ndarray  # label id → bool: E-, S-, L-, U-

    @classmethod
    def from_id2label(cls, id2label: dict[int, str]) -> LabelScheme:
        n = max(id2label) + 1 if id2label else 0
        if sorted(id2label) != list(range(n)):
            raise ValueError(f"id2label ids must be 0..{n - 1}, got {sorted(id2label)}")
        names = [id2label[i] for i in range(n)]
        parsed = [_parse_label(name) for name in names]
        shapes = {shape for shape, _, _ in parsed} - {"outside"}
        bad = [name for name, p in zip(names, parsed) if p[0] == "bad"]
        if bad:
            problem = f"cannot read label(s) {bad}"
        elif len(shapes) > 1:
            # e.g. "B-Dis" beside "Chem", or "B" beside "B-Dis": which scheme is meant?
            by_shape = {s: [m for m, p in zip(names, parsed) if p[0] == s] for s in sorted(shapes)}
            problem = f"labels of mixed schemes {by_shape}"
        elif n and OUTSIDE_LABEL not in names:
            problem = f"no outside label {OUTSIDE_LABEL!r}"
        else:
            problem = ""
        if problem:
            raise ValueError(
                f"unsupported NER label set: {problem}; expected O plus B-/I- (also E-/S-, "
                f"L-/U-, '_' as separator), bare B/I, or plain IO types; all labels: {names}"
            )
        tags: list[str] = []
        for _, _, tag in parsed:
            if tag not in tags:
                tags.append(tag)
        return cls(
            tuple(tags),
            np.array([tags.index(tag) for _, _, tag in parsed], dtype=np.int64),
            np.array([prefix in _BEGINS for _, prefix, _ in parsed], dtype=bool),
            np.array([shape == "outside" for shape, _, _ in parsed], dtype=bool),
            np.array([prefix in _ENDS for _, prefix, _ in parsed], dtype=bool),
        )


# Every code point for which ``str.isspace`` is true (the test checks all of Unicode).
WHITESPACE = np.array(
    [0x9, 0xA, 0xB, 0xC, 0xD, 0x1C, 0x1D, 0x1E, 0x1F, 0x20, 0x85, 0xA0, 0x1680]
    + list(range(0x2000, 0x200B))
    + [0x2028, 0x2029, 0x202F, 0x205F, 0x3000],
    dtype=np.uint32,
)
# A lookup table over code points up to the last whitespace one; higher ones clip to
# its final entry (0x3001, not whitespace).
_IS_SPACE = np.zeros(int(WHITESPACE.max()) + 2, dtype=bool)
_IS_SPACE[WHITESPACE] = True
# Combining marks (``unicodedata.combining`` non-zero) of the Basic Multilingual Plane;
# the few beyond it (U+101FD and up) are left to the per-character check.
_IS_MARK = np.fromiter(
    (unicodedata.combining(chr(c)) != 0 for c in range(0x10000)), dtype=bool, count=0x10000
)


def _maybe_mark(codes: np.ndarray) -> np.ndarray:
    """Whether each code point may be a combining mark (true beyond the BMP)."""
    return (codes > 0xFFFF) | _IS_MARK[np.minimum(codes, 0xFFFF)]


@dataclass(frozen=True)
class TokenPredictions:
    """The model's label for each token of one document, or of several laid end to end,
    with where each token sits in its document's text."""

    label: np.ndarray  # label id per token
    score: np.ndarray  # the label's probability
    word_ids: np.ndarray  # word of each token within its document
    starts: np.ndarray  # character offsets in its document's text, end exclusive
    ends: np.ndarray
    probs: np.ndarray | None = None  # (tokens, labels): for average or Viterbi decoding


@dataclass(frozen=True)
class Spans:
    """Entities of one document, or of several one after the other: character offsets
    in their document's text (end exclusive), entity type (an index into ``tags``),
    score. Arrays, so that a batch's spans become Arrow columns without a Python object
    per entity."""

    start: np.ndarray  # int32
    end: np.ndarray  # int32
    tag: np.ndarray  # int32 index into tags
    tags: tuple[str, ...]
    score: np.ndarray  # float32

    @property
    def label(self) -> list[str]:
        return [self.tags[t] for t in self.tag.tolist()]

    def __len__(self) -> int:
        return len(self.start)


def _word_starts(word_ids: np.ndarray, doc_first: np.ndarray | None = None) -> np.ndarray:
    """Index of the first token of each word (a token whose word id differs from the
    previous token's, or has none (-1), starts a word; so does a document's first token,
    where ``doc_first`` marks them)."""
    n = len(word_ids)
    new = np.ones(n, dtype=bool)
    if n > 1:
        new[1:] = (word_ids[1:] != word_ids[:-1]) | (word_ids[1:] < 0)
    if doc_first is not None:
        new |= doc_first
    return np.flatnonzero(new)


def aggregate_words(
    token_label: np.ndarray,
    token_score: np.ndarray,
    word_ids: np.ndarray,
    strategy: str,
    probs: np.ndarray | None = None,
    doc_first: np.ndarray | None = None,
    pieces: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per unit (a word, or a token for ``simple``): label id, score, first and last
    token index. ``token_label``/``token_score`` are each token's argmax label and its
    probability; ``average`` also needs the full ``[n_tokens, n_labels]`` ``probs``.
    ``doc_first`` marks the first token of each document when several are concatenated.
    ``pieces`` marks, for ``simple``, tokens with the same offsets as the token before."""
    n = len(token_label)
    if strategy == "simple":
        # Byte-level BPE cuts a character of several UTF-8 bytes into tokens with one
        # and the same offsets: they are one unit (the first token's prediction), or each
        # could start an entity of its own, the same span repeated.
        joined = np.zeros(n, dtype=bool) if pieces is None else pieces.copy()
        if doc_first is not None:
            joined &= ~doc_first
        first = np.flatnonzero(~joined)
        last = np.append(first[1:] - 1, n - 1)
        return token_label[first], token_score[first], first, last
    starts = _word_starts(word_ids, doc_first)
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
        mean = unit_probs(probs, strategy, starts, lasts)
        label = mean.argmax(axis=1)
        return label, mean[np.arange(len(starts)), label], starts, lasts
    raise ValueError(f"unknown aggregation strategy {strategy!r}")


def decode_spans(
    pred: TokenPredictions, scheme: LabelScheme, strategy: str, text: str, decoding: str = "greedy"
) -> Spans:
    """Group a document's token predictions into entity spans.

    Consecutive units of the same type join one entity unless a unit begins one
    (``B-``, ``S-``) or the unit before ends one (``E-``, ``S-``); the entity score is the
    mean of its units' scores; ``O`` groups are dropped. Offsets are characters of
    ``text``, trimmed as :func:`trim_span` says. ``decoding="viterbi"`` replaces each
    unit's own most probable label by the best sequence the scheme allows
    (:mod:`pipeline.core.viterbi`); it needs ``pred.probs``.
    """
    bounds = np.array([0, len(pred.label)])
    spans, _ = decode_documents(pred, bounds, [text], scheme, strategy, decoding)
    return spans


def decode_documents(
    pred: TokenPredictions,
    bounds: np.ndarray,
    texts: list[str],
    scheme: LabelScheme,
    strategy: str,
    decoding: str = "greedy",
) -> tuple[Spans, np.ndarray]:
    """:func:`decode_spans` over several documents in one go: their token arrays are
    concatenated, document ``i`` owning tokens ``bounds[i]:bounds[i + 1]`` (its own word
    ids and character offsets). Returns their entities, document after document, and
    the number of entities of each. Decoding documents one by one cost more in numpy's
    per-call overhead than in the tokens themselves."""
    n_docs = len(texts)
    n = len(pred.label)
    tok_starts, tok_ends = pred.starts, pred.ends
    if n == 0:
        empty = np.zeros(0, np.int32)
        spans = Spans(empty, empty, empty, scheme.tags, np.zeros(0, np.float32))
        return spans, np.zeros(n_docs, np.int64)
    firsts = bounds[:-1][bounds[:-1] < n]
    doc_first = np.zeros(n, dtype=bool)
    doc_first[firsts] = True
    pieces = np.zeros(n, dtype=bool)
    pieces[1:] = (tok_starts[1:] == tok_starts[:-1]) & (tok_ends[1:] == tok_ends[:-1])
    label, score, first_tok, last_tok = aggregate_words(
        pred.label, pred.score, pred.word_ids, strategy, pred.probs, doc_first, pieces
    )
    if decoding == "viterbi":
        label, score = _constrained(pred, scheme, strategy, bounds, first_tok, last_tok)
    elif decoding != "greedy":
        raise ValueError(f"unknown decoding {decoding!r}")
    tag = scheme.tag_of[label]
    new_group = np.ones(len(label), dtype=bool)
    new_group[1:] = (
        (tag[1:] != tag[:-1])
        | scheme.is_begin[label[1:]]
        | scheme.is_end[label[:-1]]
        | doc_first[first_tok[1:]]
    )
    g_start = np.flatnonzero(new_group)
    g_last = np.append(g_start[1:] - 1, len(label) - 1)
    g_score = np.add.reduceat(score.astype(np.float64), g_start) / (g_last - g_start + 1)
    keep = ~scheme.is_outside[label[g_start]]
    tok0 = first_tok[g_start[keep]]
    doc = np.searchsorted(bounds, tok0, side="right") - 1
    # Offsets in the documents' texts laid end to end, so one pass trims them all.
    base = np.zeros(n_docs, dtype=np.int64)
    np.cumsum([len(t) for t in texts[:-1]], out=base[1:])
    starts = tok_starts[tok0] + base[doc]
    ends = tok_ends[last_tok[g_last[keep]]] + base[doc]
    starts, ends = trim_spans(texts[0] if n_docs == 1 else "".join(texts), starts, ends)
    nonempty = ends > starts
    doc = doc[nonempty]
    spans = Spans(
        (starts[nonempty] - base[doc]).astype(np.int32),
        (ends[nonempty] - base[doc]).astype(np.int32),
        tag[g_start[keep]][nonempty].astype(np.int32),
        scheme.tags,
        g_score[keep][nonempty].astype(np.float32),
    )
    return spans, np.bincount(doc, minlength=n_docs)


def unit_probs(
    probs: np.ndarray, strategy: str, first_tok: np.ndarray, last_tok: np.ndarray
) -> np.ndarray:
    """Label probabilities of each unit (tokens ``first_tok..last_tok``): the mean of its
    tokens' (``average``), their maximum per label (``max``), or its first token's."""
    if strategy == "average":
        return np.add.reduceat(probs, first_tok, axis=0) / (last_tok - first_tok + 1)[:, None]
    if strategy == "max":
        return np.maximum.reduceat(probs, first_tok, axis=0)
    return probs[first_tok]


def _constrained(
    pred: TokenPredictions,
    scheme: LabelScheme,
    strategy: str,
    bounds: np.ndarray,
    first_tok: np.ndarray,
    last_tok: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Each unit's label from the best allowed sequence over its document, and that
    label's probability (a unit's label probabilities: :func:`unit_probs`)."""
    if pred.probs is None:
        raise ValueError("Viterbi decoding needs full label probabilities")
    unit = unit_probs(pred.probs, strategy, first_tok, last_tok)
    unit_bounds = np.searchsorted(first_tok, bounds)  # a document's first token starts a unit
    label = viterbi_documents(unit, unit_bounds, scheme)
    return label, unit[np.arange(len(label)), label]


def trim_spans(text: str, starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`trim_span` over many spans (character offsets, end exclusive). Only spans
    with whitespace or a possible combining mark at an edge (rare: tokenizers' offsets
    exclude whitespace, except some byte-level BPE ones) take the per-character path; the
    rest are checked on an array of the text's code points."""
    edge = ends > starts
    if not edge.any():
        return starts, ends
    # one code past the text (0, not a mark) so that the character after an end exists
    codes = np.frombuffer((text + "\0").encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    first, last, after = codes[starts[edge]], codes[ends[edge] - 1], codes[ends[edge]]
    top = len(_IS_SPACE) - 1
    edge[edge] = (
        _IS_SPACE[np.minimum(first, top)]
        | _IS_SPACE[np.minimum(last, top)]
        | _maybe_mark(first)
        | _maybe_mark(after)
    )
    if edge.any():
        starts, ends = starts.copy(), ends.copy()
        for i in np.flatnonzero(edge).tolist():
            starts[i], ends[i] = trim_span(text, int(starts[i]), int(ends[i]))
    return starts, ends


def trim_span(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` (characters) trimmed of whitespace, with combining marks kept
    with their base character: the end takes in the marks right after it, the start
    skips marks whose base lies before it. WordPiece tokenizers that strip accents
    leave the U+0301 of NFD "Barre\u0301" out of every token's offsets."""
    while start < end and (text[start].isspace() or unicodedata.combining(text[start])):
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start:  # marks are never whitespace, so this never crosses any
        while end < len(text) and unicodedata.combining(text[end]):
            end += 1
    return start, end
