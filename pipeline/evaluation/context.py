"""Score the clinical context of predicted entities against gold (pure: no I/O).

A gold span is scored when a predicted entity has exactly its ``doc_id``, ``start`` and
``end`` (context depends on the offsets only, so a model entity and a given span at the
same offsets agree). Per axis the gold spans carry (``negation``, ``temporality``,
``experiencer``): accuracy, and precision, recall and F1 of each non-default value over the
matched spans; and the share of matched spans right on every axis the gold carries.

A gold set that never uses a value the job can give (NegEx's has no ``possible``) scores
that value as the axis's default (``possible`` as ``affirmed``), as NegEx's own
evaluation counts only negated against not negated; the report says so.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from pipeline.context.lexicon import AXES, DEFAULTS
from pipeline.evaluation.scoring import Counts
from pipeline.schemas import DOC_ID, END, NEGATION, START

# Values a gold set may not have, scored as the default when it never uses them.
FOLDABLE = {NEGATION: {"possible"}}
_KEY = [DOC_ID, START, END]


def context_axes(columns: list[str]) -> list[str]:
    return [a for a in AXES if a in columns]


def _frame(spans: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    out = spans[_KEY + axes].copy()
    out[DOC_ID] = out[DOC_ID].astype(str)
    out[START] = out[START].astype("int64")
    out[END] = out[END].astype("int64")
    return out


def score_context(gold: pd.DataFrame, pred: pd.DataFrame) -> dict[str, Any]:
    """Context scores of ``pred`` against ``gold`` (both with doc_id, start, end and the
    axes' columns); empty when the gold carries no axis."""
    axes = [a for a in context_axes(list(gold.columns)) if a in pred.columns]
    if not axes:
        return {}
    g = _frame(gold, axes)
    p = _frame(pred, axes).drop_duplicates(_KEY)
    m = g.merge(p, on=_KEY, how="left", suffixes=("_gold", "_pred"), indicator=True)
    matched = m[m["_merge"] == "both"]
    out: dict[str, Any] = {"n_gold": len(g), "n_matched": len(matched), "axes": {}}
    right = pd.Series(True, index=matched.index)
    for axis in axes:
        gold_v = matched[f"{axis}_gold"].astype(str).str.lower()
        pred_v = matched[f"{axis}_pred"].astype(str).str.lower()
        used = set(gold_v)
        folded = sorted(FOLDABLE.get(axis, set()) & (set(pred_v) - used))
        pred_v = pred_v.where(~pred_v.isin(folded), DEFAULTS[axis])
        right &= gold_v == pred_v
        values = {}
        for v in sorted((used | set(pred_v)) - {DEFAULTS[axis], "none"}):
            c = Counts(
                tp=int(((gold_v == v) & (pred_v == v)).sum()),
                fp=int(((gold_v != v) & (pred_v == v)).sum()),
                fn=int(((gold_v == v) & (pred_v != v)).sum()),
            )
            values[v] = {"precision": c.precision, "recall": c.recall, "f1": c.f1,
                         "n_gold": c.tp + c.fn, "tp": c.tp, "fp": c.fp, "fn": c.fn}  # fmt: skip
        out["axes"][axis] = {
            "accuracy": float((gold_v == pred_v).mean()) if len(matched) else 0.0,
            "values": values,
            "scored_as_default": folded,  # predicted values the gold never uses
        }
    out["all_axes_right"] = float(right.mean()) if len(matched) else 0.0
    return out


def format_context(scores: dict[str, Any]) -> str:
    """A plain-text table of ``score_context``'s result, in percent."""
    if not scores:
        return ""
    lines = [
        f"context: {scores['n_matched']} of {scores['n_gold']} gold spans matched exactly",
        f"{'axis':<12} {'value':<13} {'n':>5} {'P':>6} {'R':>6} {'F1':>6}",
    ]
    for axis, a in scores["axes"].items():
        for value, v in a["values"].items():
            lines.append(
                f"{axis:<12} {value:<13} {v['n_gold']:>5} {v['precision']:>6.1%} "
                f"{v['recall']:>6.1%} {v['f1']:>6.1%}"
            )
        note = f" ({', '.join(a['scored_as_default'])} scored as {DEFAULTS[axis]})"
        lines.append(
            f"{axis:<12} {'accuracy':<13} {'':>5} {a['accuracy']:>6.1%}"
            + (note if a["scored_as_default"] else "")
        )
    lines.append(f"all axes right: {scores['all_axes_right']:.1%}")
    return "\n".join(lines)
