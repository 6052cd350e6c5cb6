"""Scoring an annotate output folder against gold entity spans: the library call behind
``python -m jobs.evaluate``. Spans are character offsets, end exclusive."""

from __future__ import annotations

import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

import pyarrow as pa

from pipeline.evaluation.context import context_axes, format_context, score_context
from pipeline.evaluation.scoring import SPAN_COLUMNS, format_report, missing_columns, score_spans
from pipeline.schemas import DOC_ID, DOCUMENTS_DIR, ENTITIES_DIR, STATUS
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
    pred: str, gold_entities: str, gold_docs: str | None = None, json_uri: str | None = None
) -> Evaluation:
    """Score the annotate output folder ``pred`` against the gold spans ``gold_entities``
    over the documents of ``gold_docs`` (default: the gold entities' documents and those
    of ``pred/documents``); write the report to ``json_uri`` (default ``pred/eval.json``).
    Raises ``InputError`` naming the URI and column when an input lacks one."""
    axes = _context_columns(gold_entities)
    gold = _read(gold_entities, [*SPAN_COLUMNS, *axes], "gold entities")
    pred_entities = _read(storage.join(pred, ENTITIES_DIR), [*SPAN_COLUMNS, *axes], "pred entities")

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
    out = report.to_dict() | extra
    if context:
        out["context"] = context
    out["inputs"] = {
        "pred": pred,
        "gold_entities": gold_entities,
        "gold_docs": gold_docs,
    }
    json_uri = json_uri or storage.join(pred, "eval.json")
    storage.write_json(json_uri, out)
    log.info("wrote %s", json_uri)
    table = format_report(report, extra)
    if context:
        table += "\n\n" + format_context(context)
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


def _context_columns(uri: str) -> list[str]:
    """The context columns the gold entities carry (read from the schema only)."""
    try:
        names = storage.parquet_schema(uri).names
    except (OSError, pa.ArrowInvalid):
        return []  # _read names what is wrong with the file
    return context_axes(names)
