"""Score predicted entity spans against gold spans (pure: no I/O).

Spans are character offsets ``[start, end)`` into a document's text, end exclusive.
Two matchings are scored, each micro-averaged over all labels and per label:

* **strict**: same ``doc_id``, ``start``, ``end`` and ``label``.
* **lenient**: same ``doc_id`` and ``label``, and the spans share at least one character
  (``max(start, start') < min(end, end')``).

Both matchings are one-to-one: a gold span is matched at most once and a predicted span at
most once, so precision and recall never exceed 1. Rows are counted as they are: a
duplicated predicted row (same doc, start, end and label) is a false positive, and a
duplicated gold row must be found twice.

Lenient matching is greedy: among all overlapping (gold, pred) pairs of one document and
label, the pair with the largest overlap (in characters) is matched first, ties going to the
pair whose boundaries are closest (``|start - start'| + |end - end'|``), then to the earlier
span. An exact match is therefore always taken before a longer span that covers the same
gold, so lenient TP >= strict TP. Greedy is not always a maximum matching: in a rare chain of
partial overlaps (pred A overlaps golds X and Y, pred B overlaps only X, and A-X overlap most)
it can leave a pair unmatched that another assignment would have matched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from pipeline.schemas import DOC_ID, END, LABEL, START

SPAN_COLUMNS: tuple[str, ...] = (DOC_ID, START, END, LABEL)
_KEY = [DOC_ID, START, END, LABEL]


@dataclass(frozen=True)
class Counts:
    """True positives, false positives and false negatives, in spans."""

    tp: int = 0
    fp: int = 0
    fn: int = 0

    @property
    def precision(self) -> float:
        """tp / (tp + fp); 0.0 when nothing was predicted."""
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0

    @property
    def recall(self) -> float:
        """tp / (tp + fn); 0.0 when there is no gold span."""
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0

    @property
    def f1(self) -> float:
        """Harmonic mean of precision and recall; 0.0 when both are 0."""
        p, r = self.precision, self.recall
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "tp": self.tp,
            "fp": self.fp,
            "fn": self.fn,
            "precision": self.precision,
            "recall": self.recall,
            "f1": self.f1,
        }


@dataclass(frozen=True)
class MatchScores:
    """Scores of one matching: micro over all labels, and per label (sorted by name)."""

    micro: Counts
    per_label: dict[str, Counts] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "micro": self.micro.to_dict(),
            "per_label": {k: v.to_dict() for k, v in self.per_label.items()},
        }


@dataclass(frozen=True)
class EvalReport:
    """Strict and lenient scores, and what was counted (spans and documents)."""

    strict: MatchScores
    lenient: MatchScores
    n_docs: int  # documents scored
    n_gold: int  # gold spans inside the scored documents
    n_pred: int  # predicted spans inside the scored documents
    n_gold_outside: int  # gold spans of documents outside the scored set (ignored)
    n_pred_outside: int  # predicted spans of documents outside the scored set (ignored)

    def to_dict(self) -> dict[str, Any]:
        return {
            "strict": self.strict.to_dict(),
            "lenient": self.lenient.to_dict(),
            "counts": {
                "n_docs": self.n_docs,
                "n_gold": self.n_gold,
                "n_pred": self.n_pred,
                "n_gold_outside_docs": self.n_gold_outside,
                "n_pred_outside_docs": self.n_pred_outside,
            },
            "matching": {
                "strict": "one-to-one on equal (doc_id, start, end, label); duplicates count",
                "lenient": "one-to-one greedy by largest character overlap, same doc and label",
            },
        }


def missing_columns(columns: Iterable[str], required: Iterable[str] = SPAN_COLUMNS) -> list[str]:
    """The names in ``required`` that ``columns`` lacks, in ``required`` order."""
    have = set(columns)
    return [c for c in required if c not in have]


def _spans_frame(spans: pa.Table | pd.DataFrame, what: str) -> pd.DataFrame:
    """The span columns as a DataFrame with string ids and labels and int64 offsets."""
    names = spans.column_names if isinstance(spans, pa.Table) else list(spans.columns)
    missing = missing_columns(names)
    if missing:
        raise ValueError(f"{what} spans lack column(s) {missing}")
    if isinstance(spans, pa.Table):
        df = spans.select(list(SPAN_COLUMNS)).to_pandas()
    else:
        df = spans[list(SPAN_COLUMNS)].copy()
    if df[_KEY].isna().to_numpy().any():
        raise ValueError(f"{what} spans have null values in {list(SPAN_COLUMNS)}")
    df[DOC_ID] = df[DOC_ID].astype(str)
    df[LABEL] = df[LABEL].astype(str)
    df[START] = df[START].astype(np.int64)
    df[END] = df[END].astype(np.int64)
    if len(df) and ((df[START] < 0).any() or (df[END] < df[START]).any()):
        raise ValueError(f"{what} spans need 0 <= start <= end (character offsets)")
    return df


def _strict_tp(gold: pd.DataFrame, pred: pd.DataFrame) -> pd.Series:
    """Strict true positives per label: each key matches min(#gold, #pred) times."""
    g = gold.groupby(_KEY, sort=False).size().rename("g")
    p = pred.groupby(_KEY, sort=False).size().rename("p")
    both = pd.concat([g, p], axis=1, join="inner")
    tp = np.minimum(both["g"], both["p"])
    return tp.groupby(level=LABEL).sum()


def _lenient_tp(gold: pd.DataFrame, pred: pd.DataFrame) -> pd.Series:
    """Lenient true positives per label, greedy one-to-one (see the module docstring)."""
    if not len(gold) or not len(pred):
        return pd.Series(dtype=np.int64)
    both = pd.concat([gold[[DOC_ID, LABEL]], pred[[DOC_ID, LABEL]]], ignore_index=True)
    grp = both.groupby([DOC_ID, LABEL], sort=True).ngroup().to_numpy(np.int64)
    g_grp, p_grp = grp[: len(gold)], grp[len(gold) :]
    g_order = np.lexsort((gold[END].to_numpy(), gold[START].to_numpy(), g_grp))
    p_order = np.lexsort((pred[END].to_numpy(), pred[START].to_numpy(), p_grp))
    gs, ge, g_grp = (a[g_order] for a in (gold[START].to_numpy(), gold[END].to_numpy(), g_grp))
    ps, pe, p_grp = (a[p_order] for a in (pred[START].to_numpy(), pred[END].to_numpy(), p_grp))
    g_label = gold[LABEL].to_numpy()[g_order]

    # Golds of one group sorted by start form a contiguous run. A pred [ps, pe) can only
    # overlap golds of its group with start < pe (upper bound) and whose running max end
    # exceeds ps (lower bound); both keys are monotone, so searchsorted finds the range.
    big = int(max(ge.max(), pe.max())) + 1
    run_max_end = pd.Series(ge).groupby(g_grp).cummax().to_numpy()
    hi = np.searchsorted(g_grp * big + gs, p_grp * big + pe, side="left")
    lo = np.searchsorted(g_grp * big + run_max_end, p_grp * big + ps, side="right")
    n_cand = np.maximum(hi - lo, 0)
    p_idx = np.repeat(np.arange(len(ps)), n_cand)
    first = np.repeat(np.cumsum(n_cand) - n_cand, n_cand)
    g_idx = np.repeat(lo, n_cand) + (np.arange(len(p_idx)) - first)
    overlap = np.minimum(pe[p_idx], ge[g_idx]) - np.maximum(ps[p_idx], gs[g_idx])
    keep = overlap > 0
    p_idx, g_idx, overlap = p_idx[keep], g_idx[keep], overlap[keep]
    dist = np.abs(ps[p_idx] - gs[g_idx]) + np.abs(pe[p_idx] - ge[g_idx])
    order = np.lexsort((p_idx, g_idx, dist, -overlap))

    g_used = np.zeros(len(gs), dtype=bool)
    p_used = np.zeros(len(ps), dtype=bool)
    matched: list[int] = []
    # Sequential by nature (each match removes candidates); one pass over overlapping pairs.
    for gi, pi in zip(g_idx[order].tolist(), p_idx[order].tolist(), strict=True):
        if not g_used[gi] and not p_used[pi]:
            g_used[gi] = p_used[pi] = True
            matched.append(gi)
    return pd.Series(g_label[matched]).value_counts()


def _scores(tp: pd.Series, n_gold: pd.Series, n_pred: pd.Series) -> MatchScores:
    labels = sorted(set(n_gold.index) | set(n_pred.index))
    per_label: dict[str, Counts] = {}
    for label in labels:
        t, g, p = (int(s.get(label, 0)) for s in (tp, n_gold, n_pred))
        per_label[label] = Counts(tp=t, fp=p - t, fn=g - t)
    micro = Counts(
        tp=sum(c.tp for c in per_label.values()),
        fp=sum(c.fp for c in per_label.values()),
        fn=sum(c.fn for c in per_label.values()),
    )
    return MatchScores(micro=micro, per_label=per_label)


def score_spans(
    gold: pa.Table | pd.DataFrame,
    pred: pa.Table | pd.DataFrame,
    doc_ids: Iterable[str],
) -> EvalReport:
    """Score ``pred`` spans against ``gold`` spans over the documents ``doc_ids``.

    Both inputs need ``doc_id``, ``start``, ``end`` (characters, end exclusive) and
    ``label``; other columns are ignored. Doc ids are compared as strings, labels exactly
    (no case folding). Every document in ``doc_ids`` counts, so one without predictions
    adds all its gold spans as false negatives; spans of documents outside ``doc_ids``
    are dropped and counted in ``n_gold_outside`` / ``n_pred_outside``.
    """
    g = _spans_frame(gold, "gold")
    p = _spans_frame(pred, "pred")
    docs = pd.Index(pd.unique(np.asarray([str(d) for d in doc_ids], dtype=object)))
    g_in, p_in = g[DOC_ID].isin(docs), p[DOC_ID].isin(docs)
    g_out, p_out = int((~g_in).sum()), int((~p_in).sum())
    g, p = g[g_in].reset_index(drop=True), p[p_in].reset_index(drop=True)

    n_gold, n_pred = g[LABEL].value_counts(), p[LABEL].value_counts()
    return EvalReport(
        strict=_scores(_strict_tp(g, p), n_gold, n_pred),
        lenient=_scores(_lenient_tp(g, p), n_gold, n_pred),
        n_docs=len(docs),
        n_gold=len(g),
        n_pred=len(p),
        n_gold_outside=g_out,
        n_pred_outside=p_out,
    )


def format_report(report: EvalReport, extra: Mapping[str, Any] | None = None) -> str:
    """A plain-text table: per label and micro, strict and lenient, percentages to 0.1."""
    header = (
        f"{'label':<20} | {'strict tp':>9} {'fp':>6} {'fn':>6} {'P':>6} {'R':>6} {'F1':>6}"
        f" | {'lenient tp':>10} {'fp':>6} {'fn':>6} {'P':>6} {'R':>6} {'F1':>6}"
    )

    def row(name: str, s: Counts, le: Counts) -> str:
        return (
            f"{name:<20} | {s.tp:>9} {s.fp:>6} {s.fn:>6} {s.precision:>6.1%} {s.recall:>6.1%}"
            f" {s.f1:>6.1%} | {le.tp:>10} {le.fp:>6} {le.fn:>6} {le.precision:>6.1%}"
            f" {le.recall:>6.1%} {le.f1:>6.1%}"
        )

    lines = [header, "-" * len(header)]
    for label, counts in report.strict.per_label.items():
        lines.append(row(label, counts, report.lenient.per_label[label]))
    lines.append("-" * len(header))
    lines.append(row("ALL (micro)", report.strict.micro, report.lenient.micro))
    lines.append("")
    summary = {k: v for k, v in report.to_dict()["counts"].items()} | dict(extra or {})
    lines.extend(f"{k}: {v}" for k, v in summary.items())
    return "\n".join(lines)
