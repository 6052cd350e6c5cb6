"""Sentence boundaries over character offsets, for clinical text.

A sentence ends at ``.``, ``!`` or ``?`` followed by a space or comma and then anything
but a lower-case letter, unless the period ends an abbreviation ("Dr.", "e.g.", an
initial, "b.i.d." before a lower-case or non-word continuation) or an enumeration label
("1."); at a blank line; at a line break before a capital, a digit or a bullet; and at
each section header (its title is a sentence of its own). MTSamples' run-on lists
(``1.  Asthma.,2.  Eczema.``) split at each item.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

_END = re.compile(r"[.!?]+[\"')\]]*(?:,|\s)[,\s]*")
_NEWLINE = re.compile(r"\n[ \t\r]*\n\s*|\n[ \t\r]*(?=[A-Z0-9\-*\u2022])")
# An enumerated item after a blank or two: "  2) Large hiatal hernia", "  3. Gastritis".
_ITEM = re.compile(r"\d{1,2}([.)])[ \t]+\S")
_TOKEN_BEFORE = re.compile(r"(\S+)$")
# Never a sentence end after these (lower-cased, without the final period).
_ABBREVIATIONS = frozenset(
    "dr mr mrs ms mx prof sr jr st vs etc approx fig figs al cf viz e.g i.e eg ie".split()
)
_PUNCT = re.compile(r"[,;:(\[\"']")
_NEXT_WORD = re.compile(r"[A-Z][a-z]")


def _is_sentence_end(text: str, punct: int, nxt: int) -> bool:
    """Whether the punctuation at ``punct`` ends a sentence whose successor starts at ``nxt``."""
    if nxt >= len(text) or text[nxt].islower():
        return False
    if text[punct] != ".":
        return True
    m = _TOKEN_BEFORE.search(text, max(0, punct - 24), punct)
    if m is None:
        return True
    token = _PUNCT.split(m.group(1))[-1].lower()  # ",1" in ".,1." is "1"
    if token in _ABBREVIATIONS:
        return False
    if len(token) == 1 and token.isalpha():  # an initial: "J. Smith"
        return False
    if "." in token and token.replace(".", "").isalpha():  # b.i.d., p.o., a.m.
        return _NEXT_WORD.match(text, nxt) is not None
    if token.isdigit() and len(token) <= 2:  # "1." opening an enumerated item
        begin = punct - len(token)
        if begin >= 2 and text[begin - 2 : begin].isspace():
            return False
        j = begin - 1
        while j >= 0 and text[j] in " \t":
            j -= 1
        return not (j < 0 or text[j] in "\n\r,;:.")
    return True


def _opens_item(text: str, m: re.Match[str]) -> bool:
    s = m.start()
    if s == 0 or not text[s - 1].isspace() or (s >= 2 and text[s - 2].isdigit()):
        return False
    return m.group(1) == ")" or (s >= 2 and text[s - 2].isspace())


def sentence_starts(text: str, breaks: Iterable[int] = ()) -> list[int]:
    """The start offset of every sentence of ``text``, ascending, beginning with 0.
    ``breaks`` are offsets that start a sentence anyway (section headers)."""
    starts = {0}
    starts.update(b for b in breaks if 0 < b < len(text))
    for m in _END.finditer(text):
        if _is_sentence_end(text, m.start(), m.end()):
            starts.add(m.end())
    starts.update(m.start() for m in _ITEM.finditer(text) if _opens_item(text, m))
    if "\n" in text:
        starts.update(m.end() for m in _NEWLINE.finditer(text) if m.end() < len(text))
    return sorted(starts)
