"""The context of a document's entities in one call: sections, then sentences, then ConText."""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.context import assertion, lexicon
from pipeline.context.sections import Section, find_headers, sections_of
from pipeline.context.sentences import sentence_starts


@dataclass(frozen=True)
class DocumentContext:
    sections: list[Section]
    negation: list[str]  # one value per span, in the order given
    temporality: list[str]
    experiencer: list[str]
    section: list[str | None]  # the section each span starts in


def analyse(
    text: str, spans: list[tuple[int, int]], lex: lexicon.Lexicon | None = None
) -> DocumentContext:
    """Context of the entity ``spans`` (start, end; characters, end exclusive) of ``text``."""
    lex = lex or lexicon.load()
    headers = find_headers(text, lex.titles)
    sections = sections_of(text, headers)
    breaks = [b for h in headers for b in (h.title_start, h.body_start)]
    starts = sentence_starts(text, breaks)
    bounds = [(s.section, s.start, s.end) for s in sections]
    values = assertion.assert_entities(text, spans, starts, bounds, lex)
    return DocumentContext(
        sections,
        values["negation"],
        values["temporality"],
        values["experiencer"],
        values["section"],
    )
