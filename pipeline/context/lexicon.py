"""The trigger lexicon (``triggers.tsv``) and section titles (``sections.tsv``), compiled.

Each axis's terms become one regular expression built from a trie of the terms, so that a
single left-to-right scan finds every cue: at each position the longest term wins, which
is what lets a pseudo trigger ("no increase") hide the trigger inside it ("no").
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

HERE = Path(__file__).parent
TRIGGERS = HERE / "triggers.tsv"
SECTIONS = HERE / "sections.tsv"

AXES = ("negation", "temporality", "experiencer")
DEFAULTS = {"negation": "affirmed", "temporality": "recent", "experiencer": "patient"}
VALUES = {
    "negation": ("affirmed", "negated", "possible"),
    "temporality": ("recent", "historical", "hypothetical"),
    "experiencer": ("patient", "other"),
}
DIRECTIONS = ("forward", "backward", "both", "pseudo", "terminate")


@dataclass(frozen=True)
class Rule:
    value: str  # what the cue says, or (pseudo, terminate) the value it stops; "*" = all
    direction: str


@dataclass
class AxisLexicon:
    """One axis's cues: a compiled scanner and the rule of each (normalised) term."""

    axis: str
    rules: dict[str, Rule] = field(default_factory=dict)
    pattern: re.Pattern[str] | None = None  # over lower-cased text
    pattern_any_case: re.Pattern[str] | None = None  # where lower-casing changes lengths

    def rule(self, matched: str) -> Rule:
        return self.rules[" ".join(matched.lower().split())]

    def finditer(self, text: str, lowered: str) -> Iterator[re.Match[str]]:
        """Matches over ``lowered`` (``text.lower()``), whose offsets are the text's when
        lower-casing kept its length (it does for all but a few characters, such as İ)."""
        assert self.pattern is not None and self.pattern_any_case is not None
        if len(lowered) == len(text):
            return self.pattern.finditer(lowered)
        return self.pattern_any_case.finditer(text)


@dataclass(frozen=True)
class Lexicon:
    axes: dict[str, AxisLexicon]
    titles: dict[str, str]  # normalised section title -> canonical section name
    version: str  # sha256 prefix of both data files: part of an output's fingerprint


def normalise_title(title: str) -> str:
    return " ".join(title.upper().split())


def _boundary(ch: str) -> str:
    return r"(?!\w)" if ch.isalnum() or ch == "_" else ""


def trie_pattern(terms: list[str]) -> str:
    """A regex matching any of ``terms`` (lower case, single spaces), longest first at each
    position, with a word boundary wherever a term starts or ends with a word character."""
    trie: dict[str, dict] = {}
    for term in terms:
        node = trie
        for ch in term:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict[str, dict], prev: str) -> str:
        alts = [
            (r"\s+" if ch == " " else re.escape(ch)) + emit(child, ch)
            for ch, child in sorted(node.items())
            if ch
        ]
        if "" in node:
            alts.append(_boundary(prev))  # the shorter term: tried after the longer ones
        return alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"

    word, other = [], []
    for ch, child in sorted(trie.items()):
        (word if ch.isalnum() or ch == "_" else other).append(re.escape(ch) + emit(child, ch))
    # A leading \b (not a lookbehind per term) lets the regex engine skip ahead to word
    # starts: about ten times faster on clinical notes.
    alts = ([r"\b(?:" + "|".join(word) + ")"] if word else []) + other
    return "|".join(alts) if alts else r"(?!x)x"


def parse_triggers(text: str, where: str = "triggers.tsv") -> dict[str, AxisLexicon]:
    axes = {a: AxisLexicon(a) for a in AXES}
    header_seen = False
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        cols = line.split("\t")
        if not header_seen:
            header_seen = True
            if cols[:4] == ["axis", "value", "direction", "term"]:
                continue
        if len(cols) < 4:
            raise ValueError(f"{where} line {n}: expected axis, value, direction, term")
        axis, value, direction, term = cols[:4]
        if axis not in axes or direction not in DIRECTIONS:
            raise ValueError(f"{where} line {n}: unknown axis {axis!r} or direction {direction!r}")
        if value != "*" and value not in VALUES[axis]:
            raise ValueError(f"{where} line {n}: {value!r} is not a value of {axis}")
        axes[axis].rules[" ".join(term.lower().split())] = Rule(value, direction)
    for lex in axes.values():
        pattern = trie_pattern(sorted(lex.rules))
        lex.pattern = re.compile(pattern)
        lex.pattern_any_case = re.compile(pattern, re.IGNORECASE)
    return axes


def parse_titles(text: str) -> dict[str, str]:
    titles = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        section, title = line.split("\t")[:2]
        if section == "section":
            continue
        titles[normalise_title(title)] = section
    return titles


@lru_cache(maxsize=1)
def load() -> Lexicon:
    """The lexicon shipped with the package, compiled once per process."""
    triggers = TRIGGERS.read_text(encoding="utf-8")
    sections = SECTIONS.read_text(encoding="utf-8")
    digest = hashlib.sha256((triggers + "\0" + sections).encode()).hexdigest()[:12]
    return Lexicon(parse_triggers(triggers), parse_titles(sections), digest)
