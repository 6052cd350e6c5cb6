"""The trigger lexicon: a data file naming its sources, compiled into one scanner per axis."""

from __future__ import annotations

import re

import pytest

from pipeline.context import lexicon


def test_every_term_names_a_known_source_and_the_header_describes_each() -> None:
    text = lexicon.TRIGGERS.read_text(encoding="utf-8")
    header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
    sources = {line.split("\t")[4] for line in text.splitlines()[1:] if line and line[0] != "#"}
    sources.discard("source")
    assert sources == {"negex", "gencontext", "medspacy", "project"}
    for source in sources:
        assert re.search(rf"#\s+{source}\s", header), source


def test_the_longest_term_wins_at_a_position() -> None:
    axes = lexicon.parse_triggers(
        "negation\tnegated\tforward\tno\tx\nnegation\t*\tpseudo\tno increase\tx\n"
    )
    pattern = axes["negation"].pattern
    assert [m.group() for m in pattern.finditer("no increase, no fever")] == ["no increase", "no"]


def test_terms_need_word_boundaries_and_match_any_whitespace() -> None:
    axes = lexicon.parse_triggers("negation\tnegated\tforward\tnegative for\tx\n")
    pattern = axes["negation"].pattern
    assert [m.group() for m in pattern.finditer("seronegative for; negative\n  for")] == [
        "negative\n  for"
    ]


def test_a_bad_line_is_refused_with_its_line_number() -> None:
    with pytest.raises(ValueError, match="line 2"):
        lexicon.parse_triggers(
            "negation\tnegated\tforward\tno\tx\nnegation\tmaybe\tforward\tx\tx\n"
        )


def test_the_shipped_lexicon_loads_with_every_axis() -> None:
    lex = lexicon.load()
    assert set(lex.axes) == {"negation", "temporality", "experiencer"}
    assert lex.axes["negation"].rule("Denies").value == "negated"
    assert lex.titles["PAST MEDICAL HISTORY"] == "past_medical_history"
