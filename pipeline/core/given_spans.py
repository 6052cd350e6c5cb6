"""Spans given by the user (``--spans``): which attach to a document, and why the others
do not. Pure: the entity stage and the run report apply the same rules."""

from __future__ import annotations

import numpy as np

# Why a given span is not attached, in the order the checks apply.
REASONS = ("null", "start_not_before_end", "unknown_doc_id", "document_not_ok", "out_of_range")


def rejection_reasons(
    null: np.ndarray, start: np.ndarray, end: np.ndarray, known: np.ndarray,
    ok: np.ndarray, n_chars: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """Per span, the first reason in ``REASONS`` it is rejected for, or "" when it
    attaches. ``null``: any of doc_id, start, end, label is null; ``known``: its doc_id is a
    document of the output; ``ok``: that document's status is ``ok``; ``n_chars``: the
    document's length in characters. Offsets are characters, end exclusive."""
    out = np.full(len(start), "", dtype=object)
    checks = (
        null,
        ~null & (start >= end),
        ~known,
        known & ~ok,
        (start < 0) | (end > n_chars),
    )
    for reason, bad in zip(REASONS, checks):
        out[(out == "") & bad] = reason
    return out


def attaches(start: int, end: int, n_chars: int) -> bool:
    """Whether a non-null span fits a processable document of ``n_chars`` characters."""
    return 0 <= start < end <= n_chars
