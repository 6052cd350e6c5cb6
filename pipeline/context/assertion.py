"""ConText (Harkema et al., JBI 2009; NegEx, Chapman et al., 2001) over character offsets.

For each axis, the cues of the lexicon found in the text modify the entities in their
scope: a forward cue what follows it, a backward cue what precedes it, up to the end of
the sentence, a termination term of that value, or ``window`` words. The cue nearest an
entity decides its value; pseudo triggers match (and so hide the shorter triggers inside
them) but modify nothing. Without a cue, the section may decide: past history, social
history and allergies are historical, family history is about someone else.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from typing import NamedTuple

import numpy as np

from pipeline.context.lexicon import AXES, DEFAULTS, AxisLexicon, Lexicon

# Most words a cue may be from the entity it modifies, per axis (None: the sentence).
# Chosen on the NegEx dev split (docs/experiments/context.md).
WINDOWS: dict[str, int | None] = {"negation": None, "temporality": None, "experiencer": 6}
SECTION_DEFAULTS: dict[str, dict[str, str]] = {
    "temporality": {
        "past_medical_history": "historical",
        "past_surgical_history": "historical",
        "social_history": "historical",
        "allergies": "historical",
    },
    "experiencer": {"family_history": "other"},
}

_WORD = re.compile(r"\w+")
_FORWARD = frozenset({"forward", "both"})
_BACKWARD = frozenset({"backward", "both"})


class Cue(NamedTuple):
    start: int
    end: int
    value: str
    direction: str


def find_cues(text: str, lex: AxisLexicon, lowered: str | None = None) -> list[Cue]:
    """The axis's cues in ``text`` (``lowered``: ``text.lower()``, if at hand), in order,
    none overlapping another."""
    rules, out = lex.rules, []
    for m in lex.finditer(text, text.lower() if lowered is None else lowered):
        matched = m.group()
        rule = rules.get(matched) or lex.rule(matched)  # rule() folds case and blanks
        out.append(Cue(m.start(), m.end(), rule.value, rule.direction))
    return out


def _words(text: str, start: int, end: int) -> int:
    return len(_WORD.findall(text, start, end))


class _AxisCues:
    """One axis's cues of one document, searchable from an entity outwards."""

    def __init__(self, text: str, cues: list[Cue], window: int | None) -> None:
        self.text = text
        self.cues = cues
        self.starts = [c.start for c in cues]
        self.window = window

    def _within(self, start: int, end: int) -> bool:
        return self.window is None or _words(self.text, start, end) <= self.window

    def _before(self, s: int, lo: int) -> tuple[int, str] | None:
        stopped: set[str] = set()
        for i in range(bisect_right(self.starts, s) - 1, -1, -1):
            c = self.cues[i]
            if c.start < lo:
                break
            if c.end > s:  # overlaps the entity
                continue
            if c.direction == "terminate":
                if c.value == "*":
                    break
                stopped.add(c.value)
            elif c.direction in _FORWARD and c.value not in stopped:
                return (s - c.end, c.value) if self._within(c.end, s) else None
        return None

    def _after(self, e: int, hi: int) -> tuple[int, str] | None:
        stopped: set[str] = set()
        for i in range(bisect_left(self.starts, e), len(self.cues)):
            c = self.cues[i]
            if c.start >= hi:
                break
            if c.direction == "terminate":
                if c.value == "*":
                    break
                stopped.add(c.value)
            elif c.direction in _BACKWARD and c.value not in stopped:
                return (c.start - e, c.value) if self._within(e, c.start) else None
        return None

    def value(self, s: int, e: int, lo: int, hi: int) -> str | None:
        """The value the nearest cue in scope gives the entity ``[s, e)`` whose sentences
        span ``[lo, hi)``, or None."""
        before, after = self._before(s, lo), self._after(e, hi)
        if before is None or after is None:
            found = before or after
            return found[1] if found else None
        return min(before, after)[1]


def assert_entities(
    text: str,
    spans: list[tuple[int, int]],
    sentence_starts: list[int],
    sections: list[tuple[str, int, int]],
    lexicon: Lexicon,
    windows: dict[str, int | None] | None = None,
) -> dict[str, list]:
    """Per axis, one value per span, and under ``"section"`` the section each span starts
    in (None outside one); ``sections`` are (name, start, end), ascending.

    Spans whose sentences hold no cue of an axis (most of them) get that axis's default
    in array operations; only the others walk their cues."""
    windows = WINDOWS if windows is None else windows
    low = text.lower()
    n_spans = len(spans)
    pairs = np.asarray(spans, dtype=np.int64).reshape(n_spans, 2)
    s, e = pairs[:, 0], pairs[:, 1]
    sent = np.asarray(sentence_starts, dtype=np.int64)
    first = np.searchsorted(sent, s, "right") - 1
    last = np.searchsorted(sent, np.maximum(s, e - 1), "right") - 1
    lo = sent[first]
    after = last + 1
    hi = np.where(after < len(sent), sent[np.minimum(after, len(sent) - 1)], len(text))
    names = [name for name, _, _ in sections]
    k = np.searchsorted(np.asarray([x[1] for x in sections], np.int64), s, "right") - 1
    ends = np.asarray([x[2] for x in sections], np.int64)
    inside = (k >= 0) & (s < ends[np.maximum(k, 0)]) if sections else np.zeros(n_spans, bool)
    sec_index = np.where(inside, k, len(names))  # len(names): outside any section
    labels = [*names, None]
    out: dict[str, list] = {"section": [labels[i] for i in sec_index.tolist()]}
    for axis in AXES:
        cues = _AxisCues(text, find_cues(text, lexicon.axes[axis], low), windows[axis])
        by_section = SECTION_DEFAULTS.get(axis, {})
        defaults = np.array([by_section.get(n, DEFAULTS[axis]) for n in names] + [DEFAULTS[axis]],
                            dtype=object)  # fmt: skip
        values = defaults[sec_index]
        cue_starts = np.asarray(cues.starts, dtype=np.int64)
        near = np.searchsorted(cue_starts, hi) > np.searchsorted(cue_starts, lo)
        for i in np.flatnonzero(near).tolist():
            v = cues.value(int(s[i]), int(e[i]), int(lo[i]), int(hi[i]))
            if v is not None:
                values[i] = v
        out[axis] = values.tolist()
    return out
