"""Abbreviation definitions, on examples of Schwartz and Hearst (PSB 2003) and abstracts'
usual forms: the long form spelled by the short form's characters, right to left."""

from __future__ import annotations

from pipeline.linking.abbreviations import abbreviations, best_long_form, expand


def test_definitions_in_text_are_found_with_their_shortest_long_form():
    text = (
        "Treatment with 5-fluorouracil (5-FU) in Duchenne muscular dystrophy (DMD). "
        "We studied the heat shock transcription factor (HSF) and ataxia-telangiectasia (A-T)."
    )
    assert abbreviations(text) == {
        "5-FU": "5-fluorouracil",
        "DMD": "Duchenne muscular dystrophy",
        "HSF": "heat shock transcription factor",
        "A-T": "ataxia-telangiectasia",
    }


def test_parentheses_that_are_not_short_forms_are_ignored():
    text = "Patients (n=12) with gout (see below) were seen (2019) in clinic (a)."
    assert abbreviations(text) == {}


def test_the_first_character_must_start_a_word():
    # "T" of "TNF" must start a word: not the t inside "factor"
    assert best_long_form("TNF", "tumor necrosis factor") == "tumor necrosis factor"
    assert best_long_form("XYZ", "tumor necrosis factor") is None
    assert best_long_form("HD", "in patients with Huntington disease") == "Huntington disease"


def test_a_definition_does_not_reach_over_a_sentence_end():
    assert abbreviations("It was given daily. Carbamazepine (CBZ) is used.") == {
        "CBZ": "Carbamazepine"
    }


def test_mentions_that_are_defined_short_forms_are_expanded():
    defined = {"DMD": "Duchenne muscular dystrophy", "AAPC": "Adenomatous polyposis coli"}
    unknown = lambda m: False  # noqa: E731
    assert expand("DMD", defined, unknown) == "Duchenne muscular dystrophy"
    assert expand("DMD patients", defined, unknown) == "DMD patients"
    assert expand("dmd", defined, unknown) == "dmd"  # case matters: a different string
    # a short form the dictionary names is linked as written, unless its long form is a name
    assert expand("AAPC", defined, lambda m: m == "AAPC") == "AAPC"
    both = lambda m: m in ("DMD", "Duchenne muscular dystrophy")  # noqa: E731
    assert expand("DMD", defined, both) == "Duchenne muscular dystrophy"


def test_word_initials_spelling_the_short_form_make_the_long_form():
    # character matching alone stops at "adenomatous": the first A also begins a word
    text = "Families with attenuated adenomatous polyposis coli (AAPC) were studied."
    assert abbreviations(text) == {"AAPC": "attenuated adenomatous polyposis coli"}
    assert abbreviations("with diabetes mellitus (DM).") == {"DM": "diabetes mellitus"}
