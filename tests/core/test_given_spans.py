"""Why a given span does not attach: one reason each, in a fixed order."""

from __future__ import annotations

import numpy as np

from pipeline.core.given_spans import attaches, rejection_reasons


def test_each_span_gets_its_first_reason_or_none() -> None:
    null = np.array([False, True, False, False, False, False, False])
    start = np.array([0, 0, 4, 0, 0, -1, 2])
    end = np.array([3, 3, 4, 3, 3, 2, 9])
    known = np.array([True, True, True, False, True, True, True])
    ok = np.array([True, True, True, False, False, True, True])
    n_chars = np.array([5, 5, 5, 0, 0, 5, 5])
    got = rejection_reasons(null, start, end, known, ok, n_chars).tolist()
    assert got == ["", "null", "start_not_before_end", "unknown_doc_id", "document_not_ok",
                   "out_of_range", "out_of_range"]  # fmt: skip


def test_attaches_needs_the_span_inside_the_text() -> None:
    assert attaches(0, 5, 5) and attaches(4, 5, 5)
    assert not attaches(0, 6, 5) and not attaches(-1, 2, 5) and not attaches(3, 3, 5)
