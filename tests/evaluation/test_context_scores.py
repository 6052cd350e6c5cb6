"""Context scores: exact span matching, per-value P/R/F1, accuracy, the all-axes share."""

from __future__ import annotations

import pandas as pd
import pytest

from pipeline.evaluation.context import format_context, score_context


def _frame(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["doc_id", "start", "end", "negation", "temporality"])


def test_scores_count_only_exactly_matching_spans() -> None:
    gold = _frame(
        [("a", 0, 4, "negated", "recent"), ("a", 5, 9, "affirmed", "historical"),
         ("b", 0, 3, "negated", "recent"), ("b", 4, 8, "affirmed", "recent")]
    )  # fmt: skip
    pred = _frame(
        [("a", 0, 4, "negated", "recent"), ("a", 5, 9, "negated", "historical"),
         ("b", 0, 3, "affirmed", "recent"), ("b", 4, 9, "negated", "recent")]
    )  # fmt: skip
    s = score_context(gold, pred)
    assert (s["n_gold"], s["n_matched"]) == (4, 3)  # b 4-8 has no exact match
    neg = s["axes"]["negation"]["values"]["negated"]
    assert (neg["tp"], neg["fp"], neg["fn"]) == (1, 1, 1)
    assert neg["precision"] == pytest.approx(0.5) and neg["f1"] == pytest.approx(0.5)
    assert s["axes"]["negation"]["accuracy"] == pytest.approx(1 / 3)
    assert s["axes"]["temporality"]["values"]["historical"]["f1"] == pytest.approx(1.0)
    assert s["all_axes_right"] == pytest.approx(1 / 3)
    assert "negation" in format_context(s)


def test_possible_counts_as_affirmed_only_when_the_gold_never_uses_it() -> None:
    gold = _frame([("a", 0, 4, "affirmed", "recent"), ("a", 5, 9, "negated", "recent")])
    pred = _frame([("a", 0, 4, "possible", "recent"), ("a", 5, 9, "negated", "recent")])
    s = score_context(gold, pred)
    assert s["axes"]["negation"]["accuracy"] == pytest.approx(1.0)
    assert s["axes"]["negation"]["scored_as_default"] == ["possible"]
    with_possible = _frame([("a", 0, 4, "possible", "recent"), ("a", 5, 9, "negated", "recent")])
    s = score_context(with_possible, _frame([("a", 0, 4, "affirmed", "recent"),
                                             ("a", 5, 9, "negated", "recent")]))  # fmt: skip
    assert s["axes"]["negation"]["accuracy"] == pytest.approx(0.5)


def test_no_axis_in_the_gold_means_no_context_scores() -> None:
    gold = pd.DataFrame({"doc_id": ["a"], "start": [0], "end": [1]})
    assert score_context(gold, gold) == {}
