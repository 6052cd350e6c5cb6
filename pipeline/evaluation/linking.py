"""Score concept linking against gold concept ids (pure: no I/O).

Spans are character offsets ``[start, end)``, end exclusive; ids are compared as strings
(white space stripped). Over the gold mentions of the scored documents:

* **acc@1**: the ``concept_id`` of the predicted entity at exactly the gold span (same
  ``doc_id``, ``start``, ``end``; one of the gold label first when there are several). A
  span without a predicted entity, or whose entity has no concept, is wrong (counted).
* **acc@5**: right when one of the ``links`` candidates of exactly that span with
  ``rank <= 5`` is right; ``None`` without a links table. It reads the candidates, not the
  entity's concept, so a link under the threshold still counts here.
* **strict with concept**: the entity scoring of ``scoring.score_spans`` (strict,
  one-to-one), where a predicted entity is a true positive only with a gold mention's
  exact (doc_id, start, end, label) and a right concept.

A prediction is right when it is one of the gold id's ids: a composite gold id
(``D1|D2``, ``D1+D2``) is split into its parts, and each part stands for every id of the
same concept (``equivalent_ids``). Gold mentions with id ``-1`` (no concept, as BC5CDR
marks them) or no id are left out, counted, and so are the predicted entities at exactly
their spans (from the strict scores). Accuracies are fractions 0-1, ``None`` over no mention.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

import pandas as pd
import pyarrow as pa

from pipeline.evaluation.scoring import Counts, MatchScores, missing_columns
from pipeline.linking.dictionary import normalize_name
from pipeline.schemas import CONCEPT_ID, DOC_ID, END, LABEL, RANK, START, TEXT

ALT_ID = "alt_id"
NO_CONCEPT = "-1"
TOP_K = 5

GOLD_COLUMNS = (DOC_ID, START, END, LABEL, CONCEPT_ID)
PRED_COLUMNS = (DOC_ID, START, END, LABEL, CONCEPT_ID)
LINKS_TABLE_COLUMNS = (DOC_ID, START, END, RANK, CONCEPT_ID)
_PARTS = re.compile(r"[|+]")

Span = tuple[str, int, int]


def equivalent_ids(pairs: Iterable[tuple[Any, Any]]) -> dict[str, frozenset[str]]:
    """Each id of ``(concept_id, alt_id)`` pairs to every id of the same concept: x and y
    are equivalent when one concept lists both (itself and its alternates). Not chained
    further: an alternate listed under two concepts joins each to it, not them together."""
    groups: dict[str, set[str]] = defaultdict(set)
    for concept, alt in pairs:
        concept, alt = _id(concept), _id(alt)
        if concept and alt:
            groups[concept].update((concept, alt))
    out: dict[str, set[str]] = defaultdict(set)
    for group in groups.values():
        for i in group:
            out[i] |= group
    return {i: frozenset(ids) for i, ids in out.items()}


def gold_parts(concept_id: str) -> list[str]:
    """The ids of a composite gold id (``D1|D2``, ``D1+D2``), in order; one for a plain id."""
    return [p for p in (s.strip() for s in _PARTS.split(concept_id)) if p]


def _id(value: Any) -> str | None:
    """A stripped id, or None for null, NaN and empty."""
    return value.strip() or None if isinstance(value, str) else None


def _rows(table: pa.Table | pd.DataFrame, names: Iterable[str], what: str) -> list[tuple]:
    names = list(names)
    have = table.column_names if isinstance(table, pa.Table) else list(table.columns)
    missing = missing_columns(have, names)
    if missing:
        raise ValueError(f"{what} lack column(s) {missing}")
    if isinstance(table, pa.Table):
        return list(zip(*(table[n].to_pylist() for n in names), strict=True))
    return list(zip(*(table[n].tolist() for n in names), strict=True))


def _accuracy(rows: list[tuple[bool, bool | None, bool]], with_links: bool) -> dict[str, Any]:
    """``rows`` of (right at 1, right at 5, no prediction) to counts and fractions."""
    n = len(rows)
    at1 = sum(r[0] for r in rows)
    at5 = sum(bool(r[1]) for r in rows) if with_links else None
    return {
        "n": n,
        "n_correct_at_1": at1,
        "acc_at_1": at1 / n if n else None,
        "n_correct_at_5": at5,
        "acc_at_5": at5 / n if n and at5 is not None else None,
        "n_no_prediction": sum(r[2] for r in rows),
    }


def _breakdown(rows: list[tuple[str, tuple]], with_links: bool) -> dict[str, Any]:
    """Overall and per label (sorted) accuracies of (label, outcome) rows."""
    per_label: dict[str, list[tuple]] = defaultdict(list)
    for label, outcome in rows:
        per_label[label].append(outcome)
    return {
        "overall": _accuracy([o for _, o in rows], with_links),
        "per_label": {k: _accuracy(per_label[k], with_links) for k in sorted(per_label)},
    }


def _strict_with_concept(
    gold: list[tuple[Span, str, frozenset[str]]],
    pred: list[tuple[Span, str, str | None]],
) -> MatchScores:
    """One-to-one: each gold mention takes the first unused prediction of its exact span
    and label whose concept is right."""
    by_key: dict[tuple[Span, str], list[str | None]] = defaultdict(list)
    for span, label, concept in pred:
        by_key[(span, label)].append(concept)
    tp: Counter[str] = Counter()
    for span, label, right in gold:
        concepts = by_key.get((span, label), [])
        for i, concept in enumerate(concepts):
            if concept in right:
                concepts[i] = None  # used
                tp[label] += 1
                break
    n_gold = Counter(label for _, label, _ in gold)
    n_pred = Counter(label for _, label, _ in pred)
    per_label = {
        k: Counts(tp=tp[k], fp=n_pred[k] - tp[k], fn=n_gold[k] - tp[k])
        for k in sorted(n_gold.keys() | n_pred.keys())
    }
    micro = Counts(
        tp=sum(c.tp for c in per_label.values()),
        fp=sum(c.fp for c in per_label.values()),
        fn=sum(c.fn for c in per_label.values()),
    )
    return MatchScores(micro=micro, per_label=per_label)


def score_linking(
    gold: pa.Table | pd.DataFrame,
    pred: pa.Table | pd.DataFrame,
    doc_ids: Iterable[str],
    links: pa.Table | pd.DataFrame | None = None,
    alt_ids: Mapping[str, frozenset[str]] | None = None,
    train_surfaces: set[str] | None = None,
) -> dict[str, Any]:
    """Linking scores of ``pred`` entities (and their ``links`` candidates) against the
    gold concept ids over the documents ``doc_ids`` (see the module docstring).

    ``gold`` needs doc_id, start, end, label, concept_id (and text with
    ``train_surfaces``); ``pred`` the same but text; ``links`` doc_id, start, end, rank,
    concept_id. ``alt_ids`` is ``equivalent_ids``'s map. ``train_surfaces`` are the
    ``normalize_name`` forms of the train mentions: it adds the accuracies of the gold
    mentions whose form is not among them (``unseen_surface``), else that is None."""
    docs = {str(d) for d in doc_ids}
    alt_ids = alt_ids or {}
    g_cols = [*GOLD_COLUMNS, *([TEXT] if train_surfaces is not None else [])]
    g_rows = [r for r in _rows(gold, g_cols, "gold entities") if str(r[0]) in docs]
    p_rows = [r for r in _rows(pred, PRED_COLUMNS, "pred entities") if str(r[0]) in docs]

    pred_at: dict[Span, list[tuple[str, str | None]]] = defaultdict(list)
    p_items: list[tuple[Span, str, str | None]] = []
    for d, s, e, label, concept in p_rows:
        span = (str(d), int(s), int(e))
        pred_at[span].append((str(label), _id(concept)))
        p_items.append((span, str(label), _id(concept)))
    candidates: dict[Span, set[str]] = defaultdict(set)
    max_rank = None
    if links is not None:
        for d, s, e, rank, concept in _rows(links, LINKS_TABLE_COLUMNS, "links"):
            max_rank = max(max_rank or 0, int(rank))
            if str(d) in docs and int(rank) <= TOP_K and _id(concept):
                candidates[(str(d), int(s), int(e))].add(_id(concept))

    n_excluded = n_null = n_composite = n_unlinked = 0
    left_out: set[Span] = set()
    outcomes: list[tuple[str, tuple]] = []
    unseen: list[tuple[str, tuple]] = []
    g_items: list[tuple[Span, str, frozenset[str]]] = []
    for row in g_rows:
        d, s, e, label, concept = row[:5]
        span, label, concept = (str(d), int(s), int(e)), str(label), _id(concept)
        if concept is None or concept == NO_CONCEPT:
            n_null += concept is None
            n_excluded += concept == NO_CONCEPT
            left_out.add(span)
            continue
        parts = [p for p in gold_parts(concept) if p != NO_CONCEPT]
        n_composite += len(gold_parts(concept)) > 1
        right = frozenset().union(*(alt_ids.get(p, {p}) for p in parts))
        g_items.append((span, label, right))
        at_span = sorted(pred_at.get(span, []), key=lambda lc: lc[0] != label)
        top = at_span[0][1] if at_span else None
        n_unlinked += bool(at_span) and top is None
        outcome = (top in right, bool(candidates.get(span, set()) & right), not at_span)
        outcomes.append((label, outcome))
        text = row[5] if train_surfaces is not None and isinstance(row[5], str) else ""
        if train_surfaces is not None and normalize_name(text) not in train_surfaces:
            unseen.append((label, outcome))

    kept = [p for p in p_items if p[0] not in left_out]
    with_links = links is not None
    return {
        **_breakdown(outcomes, with_links),
        "unseen_surface": _breakdown(unseen, with_links) if train_surfaces is not None else None,
        "strict_with_concept": _strict_with_concept(g_items, kept).to_dict(),
        "counts": {
            "n_gold": len(g_rows),
            "n_scored": len(outcomes),
            "n_excluded_no_concept": n_excluded,  # gold id -1
            "n_excluded_null_id": n_null,
            "n_composite": n_composite,
            "n_no_prediction": sum(o[2] for _, o in outcomes),
            "n_unlinked_prediction": n_unlinked,  # an entity at the span, no concept_id
            "n_pred": len(p_rows),
            "n_pred_excluded": len(p_items) - len(kept),  # at the span of an excluded gold
            "n_train_surfaces": len(train_surfaces) if train_surfaces is not None else None,
            "links_max_rank": max_rank,
        },
    }


def _pct(value: float | None) -> str:
    return f"{value:>6.1%}" if value is not None else f"{'-':>6}"


def format_linking(scores: dict[str, Any]) -> str:
    """A plain-text table of ``score_linking``'s result, in percent: per label and overall,
    acc@1 and acc@5, on unseen surface forms when scored, and strict P/R/F1 with concept."""
    c, unseen = scores["counts"], scores["unseen_surface"]
    header = f"{'linking':<20} | {'n':>5} {'acc@1':>6} {'acc@5':>6}"
    header += f" | {'unseen n':>8} {'acc@1':>6} {'acc@5':>6}" if unseen else ""
    header += f" | {'concept tp':>10} {'fp':>6} {'fn':>6} {'P':>6} {'R':>6} {'F1':>6}"

    def row(name: str, a: dict[str, Any], u: dict[str, Any] | None, s: dict[str, Any]) -> str:
        line = f"{name:<20} | {a['n']:>5} {_pct(a['acc_at_1'])} {_pct(a['acc_at_5'])}"
        if unseen:
            u = u or {"n": 0, "acc_at_1": None, "acc_at_5": None}
            line += f" | {u['n']:>8} {_pct(u['acc_at_1'])} {_pct(u['acc_at_5'])}"
        return line + (
            f" | {s['tp']:>10} {s['fp']:>6} {s['fn']:>6} {_pct(s['precision'])}"
            f" {_pct(s['recall'])} {_pct(s['f1'])}"
        )

    empty = {"n": 0, "acc_at_1": None, "acc_at_5": None}
    strict = scores["strict_with_concept"]
    lines = [header, "-" * len(header)]
    for label in sorted(scores["per_label"].keys() | strict["per_label"].keys()):
        lines.append(
            row(
                label,
                scores["per_label"].get(label, empty),
                unseen["per_label"].get(label) if unseen else None,
                strict["per_label"].get(label, Counts().to_dict()),
            )
        )
    lines.append("-" * len(header))
    lines.append(
        row("ALL", scores["overall"], unseen["overall"] if unseen else None, strict["micro"])
    )
    lines.append(
        f"gold mentions {c['n_gold']}: scored {c['n_scored']}, id -1 excluded "
        f"{c['n_excluded_no_concept']}, no id {c['n_excluded_null_id']}, composite "
        f"{c['n_composite']}, no prediction at the span {c['n_no_prediction']}, "
        f"predicted without concept {c['n_unlinked_prediction']}"
    )
    return "\n".join(lines)
