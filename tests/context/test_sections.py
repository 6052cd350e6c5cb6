"""Section headers and spans over character offsets."""

from __future__ import annotations

from pipeline.context import lexicon
from pipeline.context.sections import find_headers, sections_of

TITLES = lexicon.load().titles


def sections(text: str) -> list[tuple[str, str, str]]:
    """(section, title as written, the section's text) per section."""
    out = []
    for s in sections_of(text, find_headers(text, TITLES)):
        assert text[s.title_start : s.title_end].strip() == text[s.title_start : s.title_end]
        out.append((s.section, text[s.title_start : s.title_end], text[s.start : s.end]))
    return out


def test_mtsamples_headers_without_newlines() -> None:
    text = (
        "CHIEF COMPLAINT:,  Cough.,HISTORY OF PRESENT ILLNESS:,  She has had a cough for "
        "two weeks.,PAST MEDICAL HISTORY: , Asthma.,FAMILY HISTORY:,  Mother with diabetes."
    )
    got = sections(text)
    assert [(s, t) for s, t, _ in got] == [
        ("chief_complaint", "CHIEF COMPLAINT"),
        ("history_of_present_illness", "HISTORY OF PRESENT ILLNESS"),
        ("past_medical_history", "PAST MEDICAL HISTORY"),
        ("family_history", "FAMILY HISTORY"),
    ]
    # each section runs to the next header, the last to the end of the text
    assert got[0][2] == "CHIEF COMPLAINT:,  Cough.,"
    assert got[-1][2] == "FAMILY HISTORY:,  Mother with diabetes."


def test_mixed_case_titles_at_line_starts_and_titles_alone_on_a_line() -> None:
    text = "Chief Complaint: cough\nPast Medical History:\nasthma\nMEDICATIONS\nalbuterol\n"
    assert [s for s, _, _ in sections(text)] == [
        "chief_complaint",
        "past_medical_history",
        "medications",
    ]


def test_subheadings_stay_inside_the_exam_but_unknown_headers_close_other_sections() -> None:
    text = (
        "PHYSICAL EXAMINATION:  HEENT:  Normal.  LUNGS:  Clear.  PLAN:  Follow up.  "
        "ANESTHESIA:  General."
    )
    got = sections(text)
    assert [s for s, _, _ in got] == ["physical_exam", "plan"]
    assert got[0][2].startswith("PHYSICAL EXAMINATION:") and "LUNGS:  Clear." in got[0][2]
    assert got[1][2] == "PLAN:  Follow up.  "  # ANESTHESIA: ends it; it is no section


def test_a_known_title_after_a_gap_in_a_report_header_line() -> None:
    text = "MR BRAIN   1710 HOURS    CLINICAL HISTORY:     History of breast carcinoma."
    assert [(s, t) for s, t, _ in sections(text)] == [
        ("history_of_present_illness", "CLINICAL HISTORY")
    ]


def test_capitals_and_colons_inside_prose_are_not_headers() -> None:
    text = "The patient's BP: 120/80 and the ratio was 2:1 today."
    assert find_headers(text, TITLES) == []


def test_a_known_title_at_the_end_of_a_longer_capitalised_header() -> None:
    text = "HIS SOCIAL HISTORY:  He denies tobacco.  OPERATIVE FINDINGS:  A polyp."
    assert [(s, t) for s, t, _ in sections(text)] == [
        ("social_history", "HIS SOCIAL HISTORY"),  # the title as written, named by its end
        ("results", "OPERATIVE FINDINGS"),
    ]
