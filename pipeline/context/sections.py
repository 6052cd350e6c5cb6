"""Section headers over character offsets.

A header is a title followed by a colon that starts the text, a line, or follows
punctuation (MTSamples joins its sections with ``.,`` and has no newlines at all), in
capitals (``HISTORY OF PRESENT ILLNESS:``) or, at the start of a line, any known title in
any case (``Past Medical History:``); a known title alone on its line is one too. Known
titles (``sections.tsv``) open a section of their canonical name; other capitalised
headers close the section before them, except the subheadings of an exam, a review of
systems or results (``HEENT:``, ``LUNGS:``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pipeline.context.lexicon import normalise_title

SUBDIVIDED = frozenset({"physical_exam", "review_of_systems", "results"})

_UPPER_TITLE = re.compile(r"([A-Z](?:[A-Z0-9/&()'\- ]{0,58}[A-Z0-9)])?)[ \t]*$")
_ANY_TITLE = re.compile(r"([A-Za-z](?:[A-Za-z0-9/&()'\- ]{0,58}[A-Za-z0-9)])?)[ \t]*$")
_LINE_TITLE = re.compile(r"(?m)^[ \t]*([A-Za-z][A-Za-z0-9/&()'\- ]{0,58}[A-Za-z0-9)])[ \t]*\r?$")
_BEFORE_HEADER = frozenset("\n\r.,;:!?")
_MAX_WORDS = 8


@dataclass(frozen=True)
class Header:
    title_start: int
    title_end: int  # exclusive; the colon, if any, is not part of the title
    body_start: int  # after the colon
    section: str | None  # canonical name; None for a header not in sections.tsv


@dataclass(frozen=True)
class Section:
    section: str
    title_start: int
    title_end: int
    start: int  # = title_start
    end: int  # the next header that closes it, or the end of the text


def _opens_line(text: str, pos: int) -> bool:
    j = pos - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    return j < 0 or text[j] in "\n\r"


def _follows_boundary(text: str, pos: int) -> bool:
    j = pos - 1
    while j >= 0 and text[j] in " \t":
        j -= 1
    return j < 0 or text[j] in _BEFORE_HEADER


def _after_gap(text: str, pos: int) -> bool:
    """Whether ``pos`` follows two blanks: the field separator of many report layouts."""
    return pos >= 2 and text[pos - 2 : pos].isspace()


def _known_suffix(text: str, m: re.Match[str], titles: dict[str, str], gap: bool) -> int | None:
    """The start of the longest known title that ends the capitalised run ``m`` (and,
    with ``gap``, stands apart from the words before it: ``1710 HOURS    CLINICAL HISTORY:``)."""
    words = [w.start() for w in re.finditer(r"\S+", m.group(1))]
    for offset in words[1:]:
        start = m.start(1) + offset
        known = normalise_title(text[start : m.end(1)]) in titles
        if known and (not gap or _after_gap(text, start)):
            return start
    return None


def _header_at_colon(text: str, colon: int, titles: dict[str, str]) -> Header | None:
    lo = max(0, colon - 64)
    m = _UPPER_TITLE.search(text, lo, colon)
    if m:
        start: int | None = m.start(1)
        named = normalise_title(m.group(1))  # the title whose section it is
        if not _follows_boundary(text, m.start(1)) and not _after_gap(text, m.start(1)):
            start = _known_suffix(text, m, titles, gap=True)  # the header is that suffix
            named = normalise_title(text[start : m.end(1)]) if start is not None else named
        elif named not in titles:  # OPERATIVE FINDINGS: a findings section, titled in full
            suffix = _known_suffix(text, m, titles, gap=False)
            if suffix is not None:
                named = normalise_title(text[suffix : m.end(1)])
                start = suffix if _after_gap(text, suffix) else start  # a field of its own
        if start is not None:
            title = text[start : m.end(1)]
            if len(title.split()) <= _MAX_WORDS and (len(title) > 1 or title in titles):
                return Header(start, m.end(1), colon + 1, titles.get(named))
    m = _ANY_TITLE.search(text, lo, colon)
    if m and _opens_line(text, m.start(1)):
        section = titles.get(normalise_title(m.group(1)))
        if section is not None:
            return Header(m.start(1), m.end(1), colon + 1, section)
    return None


def find_headers(text: str, titles: dict[str, str]) -> list[Header]:
    """Every header of ``text``, in order."""
    out: dict[int, Header] = {}
    colon = text.find(":")
    while colon >= 0:
        h = _header_at_colon(text, colon, titles)
        if h is not None:
            out[h.title_start] = h
        colon = text.find(":", colon + 1)
    if "\n" in text:
        for m in _LINE_TITLE.finditer(text):
            section = titles.get(normalise_title(m.group(1)))
            if section is not None and m.start(1) not in out:
                out[m.start(1)] = Header(m.start(1), m.end(1), m.end(1), section)
    return [out[k] for k in sorted(out)]


def sections_of(text: str, headers: list[Header]) -> list[Section]:
    """The sections the headers open, each running to the header that closes it."""
    out: list[Section] = []
    current: Header | None = None

    def close(at: int) -> None:
        if current is not None and current.section is not None:
            out.append(
                Section(current.section, current.title_start, current.title_end,
                        current.title_start, at)
            )  # fmt: skip

    for h in headers:
        if h.section is None and current is not None and current.section in SUBDIVIDED:
            continue  # a subheading of the exam, the review of systems or the results
        close(h.title_start)
        current = h
    close(len(text))
    return out
