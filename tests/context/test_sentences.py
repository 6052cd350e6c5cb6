"""Sentence boundaries on clinical text, including MTSamples' shape (no newlines)."""

from __future__ import annotations

from pipeline.context.sentences import sentence_starts


def sentences(text: str, breaks: tuple[int, ...] = ()) -> list[str]:
    starts = sentence_starts(text, breaks)
    return [text[a:b].strip() for a, b in zip(starts, [*starts[1:], len(text)])]


def test_plain_sentences_split_at_their_periods() -> None:
    assert sentences("She has a cough. No fever! Why? Unclear.") == [
        "She has a cough.",
        "No fever!",
        "Why?",
        "Unclear.",
    ]


def test_abbreviations_decimals_and_initials_do_not_end_a_sentence() -> None:
    text = (
        "Seen by Dr. Smith and Mrs. J. Jones today. Take 1 tab p.o. b.i.d. for pain. "
        "A 5.5 cm mass, e.g. Lipoma, vs. cyst. She is well."
    )
    assert sentences(text) == [
        "Seen by Dr. Smith and Mrs. J. Jones today.",
        "Take 1 tab p.o. b.i.d. for pain.",
        "A 5.5 cm mass, e.g. Lipoma, vs. cyst.",
        "She is well.",
    ]


def test_a_multi_dot_abbreviation_before_a_new_sentence_still_ends_it() -> None:
    assert sentences("Give aspirin b.i.d. The rash resolved.") == [
        "Give aspirin b.i.d.",
        "The rash resolved.",
    ]


def test_lower_case_after_a_period_continues_the_sentence() -> None:
    assert sentences("Temp. was normal. pulse 80.") == ["Temp. was normal. pulse 80."]


def test_mtsamples_run_on_enumerations_split_per_item() -> None:
    text = "DIAGNOSES:,1.  Asthma.,2.  Eczema.,3.  No known allergies."
    got = sentences(text, (0, text.index(",1")))
    assert got == ["DIAGNOSES:", ",1.  Asthma.,", "2.  Eczema.,", "3.  No known allergies."]


def test_numbered_items_after_blanks_split_but_a_lone_number_does_not() -> None:
    text = "FINDINGS:  1) Normal esophagus  2) Large hiatal hernia  3. Gastritis. It was 5 mm."
    got = sentences(text)
    assert got == [
        "FINDINGS:",
        "1) Normal esophagus",
        "2) Large hiatal hernia",
        "3. Gastritis.",
        "It was 5 mm.",
    ]


def test_line_breaks_split_before_capitals_bullets_and_at_blank_lines() -> None:
    text = "No chest pain\nShe denies fever\n- cough\nwrapped line\n\nnew paragraph"
    assert sentences(text) == [
        "No chest pain",
        "She denies fever",
        "- cough\nwrapped line",
        "new paragraph",
    ]


def test_unicode_and_phi_markers_keep_offsets() -> None:
    text = "**NAME[AAA] denies café-au-lait spots. Él está bien."
    starts = sentence_starts(text)
    assert starts == [0, text.index("Él")]
