"""ConText over hand-built clinical sentences: every cue kind, direction, pseudo trigger,
termination, sentence scope and section default."""

from __future__ import annotations

import pytest

from pipeline.context.analyse import analyse


def context_of(text: str, mention: str, nth: int = 0) -> dict[str, str | None]:
    start = -1
    for _ in range(nth + 1):
        start = text.index(mention, start + 1)
    ctx = analyse(text, [(start, start + len(mention))])
    return {
        "negation": ctx.negation[0],
        "temporality": ctx.temporality[0],
        "experiencer": ctx.experiencer[0],
        "section": ctx.section[0],
    }


@pytest.mark.parametrize(
    ("text", "mention", "negation"),
    [
        ("She denies chest pain.", "chest pain", "negated"),  # forward
        ("No pericardial effusion.", "pericardial effusion", "negated"),
        ("Pneumonia was ruled out.", "Pneumonia", "negated"),  # backward
        ("Pulses absent in the left foot.", "Pulses", "negated"),
        ("Edema is unlikely and not seen.", "Edema", "negated"),  # bidirectional term
        ("Possible pneumonia in the left base.", "pneumonia", "possible"),
        ("Rule out myocardial infarction.", "myocardial infarction", "possible"),
        ("Malignancy cannot be excluded.", "Malignancy", "possible"),
        ("The mass is suspicious for carcinoma.", "carcinoma", "possible"),
        ("She has chest pain.", "chest pain", "affirmed"),
        ("NO CLUBBING, CYANOSIS OR EDEMA.", "EDEMA", "negated"),  # case, a list
        ("Extremities:  No clubbing or edema.", "edema", "negated"),  # after a header colon
    ],
)
def test_negation_cues(text: str, mention: str, negation: str) -> None:
    assert context_of(text, mention)["negation"] == negation


def test_pseudo_triggers_do_not_negate() -> None:
    assert context_of("No increase in the effusion.", "effusion")["negation"] == "affirmed"
    assert context_of("Gram negative rods in the sputum.", "rods")["negation"] == "affirmed"
    assert context_of("Not only pain but swelling.", "pain")["negation"] == "affirmed"


def test_a_termination_term_ends_the_scope() -> None:
    text = "No fever but she has a cough."
    assert context_of(text, "fever")["negation"] == "negated"
    assert context_of(text, "cough")["negation"] == "affirmed"


def test_the_scope_ends_at_the_sentence() -> None:
    text = "She denies fever. Cough for two weeks."
    assert context_of(text, "Cough")["negation"] == "affirmed"
    backward = "Fever is present. Pneumonia was ruled out."
    assert context_of(backward, "Fever")["negation"] == "affirmed"


def test_a_span_crossing_a_sentence_boundary_takes_cues_from_both_sentences() -> None:
    text = "Denies chest. Pain in the arm."
    start, end = text.index("chest"), text.index(" in the")
    ctx = analyse(text, [(start, end)])
    assert ctx.negation == ["negated"]
    assert text[start:end] == "chest. Pain"  # never moved or trimmed


@pytest.mark.parametrize(
    ("text", "mention", "temporality"),
    [
        ("History of myocardial infarction.", "myocardial infarction", "historical"),
        ("She is status post appendectomy.", "appendectomy", "historical"),
        ("She had pneumonia in the past.", "pneumonia", "historical"),
        ("Return if fever develops.", "fever", "hypothetical"),
        ("Call the clinic should she develop a rash.", "rash", "hypothetical"),
        ("Tylenol as needed for pain.", "pain", "hypothetical"),
        ("She reports a cough today.", "cough", "recent"),
    ],
)
def test_temporality_cues(text: str, mention: str, temporality: str) -> None:
    assert context_of(text, mention)["temporality"] == temporality


def test_history_of_present_illness_is_not_a_history_cue() -> None:
    text = "HISTORY OF PRESENT ILLNESS: She has a cough."
    assert context_of(text, "cough")["temporality"] == "recent"


@pytest.mark.parametrize(
    ("text", "mention", "experiencer"),
    [
        ("Her mother has breast cancer.", "breast cancer", "other"),
        ("Family history of colon cancer.", "colon cancer", "other"),
        ("Diabetes runs in the family.", "Diabetes", "other"),
        ("She has diabetes.", "diabetes", "patient"),
        ("Brought in by her husband for chest pain.", "chest pain", "patient"),  # pseudo
    ],
)
def test_experiencer_cues(text: str, mention: str, experiencer: str) -> None:
    assert context_of(text, mention)["experiencer"] == experiencer


def test_the_section_decides_defaults_and_an_explicit_cue_still_wins() -> None:
    text = (
        "HISTORY OF PRESENT ILLNESS:, Cough.,PAST MEDICAL HISTORY:, Asthma.,"
        "FAMILY HISTORY:, Diabetes.,PLAN:, Return if wheezing."
    )
    assert context_of(text, "Cough") == {
        "negation": "affirmed",
        "temporality": "recent",
        "experiencer": "patient",
        "section": "history_of_present_illness",
    }
    assert context_of(text, "Asthma")["temporality"] == "historical"
    assert context_of(text, "Asthma")["section"] == "past_medical_history"
    assert context_of(text, "Diabetes")["experiencer"] == "other"
    assert context_of(text, "wheezing")["temporality"] == "hypothetical"
    cue_wins = "PAST MEDICAL HISTORY:, Return if chest pain."
    assert context_of(cue_wins, "chest pain")["temporality"] == "hypothetical"


def test_outside_any_section_the_section_is_null() -> None:
    assert context_of("She has a cough.", "cough")["section"] is None


def test_phi_markers_and_unicode_keep_offsets_and_cues() -> None:
    text = "**NAME[AAA] denies fièvre and İİİ pain."  # İ lower-cases to two characters
    assert context_of(text, "fièvre")["negation"] == "negated"
    assert context_of(text, "pain")["negation"] == "negated"
