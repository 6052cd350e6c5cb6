"""Abbreviations a document defines, "long form (SF)", found as Schwartz and Hearst do
(A simple algorithm for identifying abbreviation definitions in biomedical text, PSB
2003): a mention that is a defined short form ("5-FU", "DMD") is linked by its long form,
which a dictionary names far more often than the abbreviation. Pure."""

from __future__ import annotations

import re
from collections.abc import Callable

# "(" short form ")", the short form without nested brackets
_PARENS = re.compile(r"\(([^()]{1,12})\)")
_WORD = re.compile(r"\S+")


def _short_form_ok(sf: str) -> bool:
    words = sf.split()
    return (
        2 <= len(sf) <= 10 and len(words) <= 2 and sf[0].isalnum() and any(c.isalpha() for c in sf)
    )


def _initials(sf: str, candidate: str) -> str | None:
    """The last words of ``candidate`` whose initials are ``sf``'s letters, in order
    ("attenuated adenomatous polyposis coli" for AAPC), or None."""
    letters = [c.lower() for c in sf if c.isalpha()]
    words = candidate.split()
    if not letters or len(letters) != len([c for c in sf if c.isalnum()]):
        return None
    if len(words) < len(letters):
        return None
    tail = words[-len(letters) :]
    if [w[0].lower() for w in tail] == letters:
        return " ".join(tail)
    return None


def best_long_form(sf: str, candidate: str) -> str | None:
    """The long form of ``sf`` at the end of ``candidate``: the words whose initials spell
    it, where there are such; else the shortest end whose characters spell it, right to
    left, its first character starting a word (Schwartz and Hearst's matching), or None."""
    by_initials = _initials(sf, candidate)
    if by_initials is not None:
        return by_initials
    s, i = len(sf) - 1, len(candidate) - 1
    while s >= 0:
        c = sf[s].lower()
        if not c.isalnum():
            s -= 1
            continue
        while i >= 0 and (
            candidate[i].lower() != c or (s == 0 and i > 0 and candidate[i - 1].isalnum())
        ):
            i -= 1
        if i < 0:
            return None
        i -= 1
        s -= 1
    start = candidate.rfind(" ", 0, i + 1) + 1
    long_form = candidate[start:].strip()
    return long_form if len(long_form) > len(sf) else None


def abbreviations(text: str) -> dict[str, str]:
    """Short form -> long form for every definition in ``text`` (the first one wins)."""
    out: dict[str, str] = {}
    for m in _PARENS.finditer(text):
        sf = m.group(1).strip()
        if not _short_form_ok(sf) or sf in out:
            continue
        before = text[: m.start()].rstrip()
        words = _WORD.findall(before[-400:])
        limit = min(len(sf) + 5, 2 * len(sf))
        candidate = " ".join(words[-limit:])
        # a definition does not cross a sentence or clause end
        for stop in (". ", "; ", ", "):
            cut = candidate.rfind(stop)
            if cut >= 0:
                candidate = candidate[cut + len(stop) :]
        long_form = best_long_form(sf, candidate)
        if long_form and sf.lower() not in long_form.lower().split():
            out[sf] = long_form
    return out


def expand(mention: str, defined: dict[str, str], is_name: Callable[[str], bool]) -> str:
    """What ``mention`` is linked by: the long form when the document defines it as a
    short form, unless the short form is a dictionary name (``is_name``) and the long form
    is not (an abbreviation the training mentions name, whose long form was found
    wrongly); else ``mention`` as written."""
    long_form = defined.get(mention.strip())
    if long_form is None or (is_name(mention) and not is_name(long_form)):
        return mention
    return long_form
