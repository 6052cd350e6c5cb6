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
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Cue:
    start: int
    end: int
    value: str
    direction: str


def find_cues(text: str, lex: AxisLexicon, lowered: str | None = None) -> list[Cue]:
    """The axis's cues in ``text`` (``lowered``: ``text.lower()``, if at hand), in order,
    none overlapping another."""
    out = []
    for m in lex.finditer(text, text.lower() if lowered is None else lowered):
        rule = lex.rule(m.group())
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
        found = [x for x in (self._before(s, lo), self._after(e, hi)) if x is not None]
        return min(found)[1] if found else None


def assert_entities(
    text: str,
    spans: list[tuple[int, int]],
    sentence_starts: list[int],
    sections: list[tuple[str, int, int]],
    lexicon: Lexicon,
    windows: dict[str, int | None] | None = None,
) -> dict[str, list[str]]:
    """Per axis, one value per span; ``sections`` are (name, start, end), ascending."""
    windows = WINDOWS if windows is None else windows
    low = text.lower()
    axes = {a: _AxisCues(text, find_cues(text, lexicon.axes[a], low), windows[a]) for a in AXES}
    sec_starts = [s[1] for s in sections]
    out: dict[str, list[str]] = {a: [] for a in AXES}
    n = len(text)
    for s, e in spans:
        first = bisect_right(sentence_starts, s) - 1
        last = bisect_right(sentence_starts, max(s, e - 1)) - 1
        lo = sentence_starts[first]
        hi = sentence_starts[last + 1] if last + 1 < len(sentence_starts) else n
        k = bisect_right(sec_starts, s) - 1
        section = sections[k][0] if k >= 0 and s < sections[k][2] else None
        for axis, cues in axes.items():
            value = cues.value(s, e, lo, hi)
            if value is None:
                value = SECTION_DEFAULTS.get(axis, {}).get(section or "", DEFAULTS[axis])
            out[axis].append(value)
    return out
