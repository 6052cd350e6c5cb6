"""Scoring an annotate output folder against gold entity spans: the library call behind
``python -m jobs.evaluate``. Spans are character offsets, end exclusive."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.evaluation.context import context_axes, format_context, score_context
from pipeline.evaluation.linking import (
    ALT_ID,
    LINKS_TABLE_COLUMNS,
    equivalent_ids,
    format_linking,
    score_linking,
)
from pipeline.evaluation.scoring import SPAN_COLUMNS, format_report, missing_columns, score_spans
from pipeline.linking.dictionary import normalize_name
from pipeline.schemas import (
    CONCEPT_ID,
    DOC_ID,
    DOCUMENTS_DIR,
    ENTITIES_DIR,
    LINKS_DIR,
    STATUS,
    TEXT,
)
from pipeline.storage import files as storage
from pipeline.types import InputError

log = logging.getLogger(__name__)


def _read(uri: str, columns: list[str], what: str) -> pa.Table:
    """Read only ``columns`` of the Parquet file or folder ``uri``."""
    if not storage.exists(uri):
        raise InputError(f"{what} not found: {uri}")
    try:
        return storage.read_parquet_table(uri, columns=columns)
    except (pa.ArrowInvalid, KeyError) as exc:
        # Read everything only on this error path, to name exactly what is missing.
        table = storage.read_parquet_table(uri)
        if table.num_columns == 0 and table.num_rows == 0:
            # A folder with no Parquet file in it: an empty table, not a broken one.
            return pa.table({c: pa.array([], pa.string()) for c in columns})
        missing = missing_columns(table.column_names, columns)
        if not missing:
            raise
        raise InputError(
            f"{what} {uri} lacks column(s) {missing}; it has {table.column_names}"
        ) from exc


def _doc_ids(table: pa.Table) -> list[str]:
    return [str(d) for d in table[DOC_ID].to_pylist()]


@dataclass(frozen=True)
class Evaluation:
    """What ``evaluate`` found: the JSON it wrote (fractions 0-1, with counts) and the
    same numbers as the printed table (percent)."""

    report: dict[str, Any]
    table: str
    json_uri: str


def evaluate(
    pred: str,
    gold_entities: str,
    gold_docs: str | None = None,
    json_uri: str | None = None,
    alt_ids: Sequence[str] = (),
    train_entities: str | None = None,
) -> Evaluation:
    """Score the annotate output folder ``pred`` against the gold spans ``gold_entities``
    over the documents of ``gold_docs`` (default: the gold entities' documents and those
    of ``pred/documents``); write the report to ``json_uri`` (default ``pred/eval.json``).

    When both the gold and the predicted entities have ``concept_id``, linking is scored
    too (``pipeline.evaluation.linking``), with ``pred/links`` for acc@5, the
    ``(concept_id, alt_id)`` tables ``alt_ids`` for equivalent ids and the ``text`` of
    ``train_entities`` for the unseen-surface subset. Raises ``InputError`` naming the URI
    and column when an input lacks one."""
    entities_uri = storage.join(pred, ENTITIES_DIR)
    gold_names = _columns(gold_entities)
    axes = context_axes(gold_names)
    link = _linking_inputs(gold_entities, gold_names, _columns(entities_uri), alt_ids,
                           train_entities)  # fmt: skip
    gold = _read(gold_entities, [*SPAN_COLUMNS, *axes, *link.gold_columns], "gold entities")
    pred_entities = _read(entities_uri, [*SPAN_COLUMNS, *axes, *link.pred_columns], "pred entities")

    documents_uri = storage.join(pred, DOCUMENTS_DIR)
    pred_docs = _pred_documents(documents_uri, pred)
    annotated = set(_doc_ids(pred_docs)) if pred_docs is not None else set()

    if gold_docs:
        doc_ids = set(_doc_ids(_read(gold_docs, [DOC_ID], "gold docs")))
    else:
        doc_ids = set(_doc_ids(gold)) | annotated

    try:
        report = score_spans(gold, pred_entities, doc_ids)
    except ValueError as exc:
        raise InputError(f"{exc} (gold: {gold_entities}, pred: {pred})") from exc
    extra = _coverage(pred_docs, doc_ids, documents_uri)
    if report.n_pred_outside:
        log.warning(
            "%d predicted spans belong to docs outside the scored set: ignored",
            report.n_pred_outside,
        )

    context = score_context(gold.to_pandas(), pred_entities.to_pandas()) if axes else {}
    linking = link.score(gold, pred_entities, doc_ids, pred) if link.scored else None
    out = report.to_dict() | extra
    if context:
        out["context"] = context
    if linking is not None:
        out["linking"] = linking
    out["inputs"] = {"pred": pred, "gold_entities": gold_entities, "gold_docs": gold_docs}
    out["inputs"] |= {"alt_ids": list(alt_ids)} if alt_ids else {}
    out["inputs"] |= {"train_entities": train_entities} if train_entities else {}
    json_uri = json_uri or storage.join(pred, "eval.json")
    storage.write_json(json_uri, out)
    log.info("wrote %s", json_uri)
    table = format_report(report, extra)
    if context:
        table += "\n\n" + format_context(context)
    if linking is not None:
        table += "\n\n" + format_linking(linking)
    return Evaluation(out, table, json_uri)


def _pred_documents(documents_uri: str, pred: str) -> pa.Table | None:
    if not storage.exists(documents_uri):
        log.warning("no %s/ under %s: cannot tell which docs were annotated", DOCUMENTS_DIR, pred)
        return None
    try:
        return _read(documents_uri, [DOC_ID, STATUS], "pred documents")
    except InputError:
        return _read(documents_uri, [DOC_ID], "pred documents")


def _coverage(pred_docs: pa.Table | None, doc_ids: set[str], documents_uri: str) -> dict[str, Any]:
    """How many scored docs the output lacks, and the scored docs' statuses."""
    extra: dict[str, Any] = {"n_docs_not_in_pred_documents": None, "doc_status": None}
    if pred_docs is None:
        return extra
    not_annotated = doc_ids - set(_doc_ids(pred_docs))
    extra["n_docs_not_in_pred_documents"] = len(not_annotated)
    if not_annotated:
        log.warning(
            "%d scored docs are missing from %s (not annotated?); their gold spans count as misses",
            len(not_annotated),
            documents_uri,
        )
    if STATUS in pred_docs.column_names:
        statuses = Counter(
            str(s)
            for d, s in zip(_doc_ids(pred_docs), pred_docs[STATUS].to_pylist(), strict=True)
            if d in doc_ids
        )
        extra["doc_status"] = dict(sorted(statuses.items()))
    return extra


def _columns(uri: str) -> list[str]:
    """The column names of a Parquet file or folder (read from the schema only)."""
    try:
        return storage.parquet_schema(uri).names
    except (OSError, pa.ArrowInvalid):
        return []  # _read names what is wrong with the file


@dataclass(frozen=True)
class _LinkingInputs:
    """What scoring linking reads besides the entities (nothing when it is not scored)."""

    scored: bool
    gold_columns: list[str]
    pred_columns: list[str]
    equivalents: dict[str, frozenset[str]]
    surfaces: set[str] | None  # normalised train mention texts, None without train entities

    def score(
        self, gold: pa.Table, pred_entities: pa.Table, doc_ids: set[str], pred: str
    ) -> dict[str, Any]:
        links_uri = storage.join(pred, LINKS_DIR)
        links = None
        if storage.exists(links_uri):
            links = _read(links_uri, list(LINKS_TABLE_COLUMNS), "pred links")
        else:
            log.warning("no %s/ under %s: acc@5 not scored", LINKS_DIR, pred)
        return score_linking(gold, pred_entities, doc_ids, links, self.equivalents, self.surfaces)


def _linking_inputs(
    gold_entities: str,
    gold_names: list[str],
    pred_names: list[str],
    alt_ids: Sequence[str],
    train_entities: str | None,
) -> _LinkingInputs:
    """Read and check the alternate ids and train mentions (always, so that a bad file
    fails before any scoring); linking is scored when gold and pred have concept_id."""
    pairs = []
    for uri in alt_ids:
        t = _read(uri, [CONCEPT_ID, ALT_ID], "alt ids")
        pairs += zip(t[CONCEPT_ID].to_pylist(), t[ALT_ID].to_pylist(), strict=True)
    surfaces = None
    if train_entities:
        texts = _read(train_entities, [TEXT], "train entities")[TEXT].to_pylist()
        surfaces = {normalize_name(t) for t in texts if t}
    if CONCEPT_ID not in gold_names or CONCEPT_ID not in pred_names:
        if alt_ids or train_entities:
            log.warning("no concept_id in the gold or pred entities: linking not scored")
        return _LinkingInputs(False, [], [], {}, None)
    if surfaces is not None and TEXT not in gold_names:
        raise InputError(
            f"gold entities {gold_entities} lack column {TEXT!r}, which --train-entities "
            f"needs; it has {gold_names}"
        )
    gold_columns = [CONCEPT_ID, *([TEXT] if surfaces is not None else [])]
    return _LinkingInputs(True, gold_columns, [CONCEPT_ID], equivalent_ids(pairs), surfaces)
