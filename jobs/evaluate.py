"""Score an annotate output folder against gold entity spans.

    python -m jobs.evaluate --pred ANNOTATE_OUTPUT_URI --gold-entities URI [--gold-docs URI]
                            [--json OUT]

Prints a table (strict and lenient P/R/F1 per label and micro, in percent) and writes the
same numbers as fractions (0-1), with counts, to ``OUT`` (default ``<pred>/eval.json``).
Spans are character offsets, end exclusive. The documents scored are those of
``--gold-docs``; without it, the union of the gold entity docs and the docs in
``<pred>/documents``. Exits non-zero, naming the URI and the column, when an input lacks
a column.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections import Counter
from typing import Any

import pyarrow as pa

from pipeline.evaluation.scoring import SPAN_COLUMNS, format_report, missing_columns, score_spans
from pipeline.schemas import DOC_ID, DOCUMENTS_DIR, ENTITIES_DIR, STATUS
from pipeline.storage import files as storage

log = logging.getLogger("evaluate")


class InputError(Exception):
    """An input is missing or lacks columns; the message names the URI."""


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


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m jobs.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--pred", required=True, help="annotate output folder (entities/, documents/)")
    ap.add_argument("--gold-entities", required=True, help="Parquet with doc_id, start, end, label")
    ap.add_argument(
        "--gold-docs",
        help="Parquet with doc_id: the documents to score (default: gold docs + pred documents)",
    )
    ap.add_argument("--json", help="where to write the JSON report (default: <pred>/eval.json)")
    return ap.parse_args(argv)


def _doc_ids(table: pa.Table) -> list[str]:
    return [str(d) for d in table[DOC_ID].to_pylist()]


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    """Read the inputs, score them, print the table and write the JSON; returns the JSON."""
    pred_entities = _read(
        storage.join(args.pred, ENTITIES_DIR), list(SPAN_COLUMNS), "pred entities"
    )
    gold = _read(args.gold_entities, list(SPAN_COLUMNS), "gold entities")

    documents_uri = storage.join(args.pred, DOCUMENTS_DIR)
    pred_docs: pa.Table | None = None
    if storage.exists(documents_uri):
        try:
            pred_docs = _read(documents_uri, [DOC_ID, STATUS], "pred documents")
        except InputError:
            pred_docs = _read(documents_uri, [DOC_ID], "pred documents")
    else:
        log.warning(
            "no %s/ under %s: cannot tell which docs were annotated", DOCUMENTS_DIR, args.pred
        )
    annotated = set(_doc_ids(pred_docs)) if pred_docs is not None else set()

    if args.gold_docs:
        doc_ids = set(_doc_ids(_read(args.gold_docs, [DOC_ID], "gold docs")))
    else:
        doc_ids = set(_doc_ids(gold)) | annotated

    try:
        report = score_spans(gold, pred_entities, doc_ids)
    except ValueError as exc:
        raise InputError(f"{exc} (gold: {args.gold_entities}, pred: {args.pred})") from exc

    extra: dict[str, Any] = {"n_docs_not_in_pred_documents": None, "doc_status": None}
    if pred_docs is not None:
        not_annotated = doc_ids - annotated
        extra["n_docs_not_in_pred_documents"] = len(not_annotated)
        if not_annotated:
            log.warning(
                "%d scored docs are missing from %s (not annotated?); their gold spans count "
                "as misses",
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
    if report.n_pred_outside:
        log.warning(
            "%d predicted spans belong to docs outside the scored set: ignored",
            report.n_pred_outside,
        )

    print(format_report(report, extra))
    out = report.to_dict() | extra
    out["inputs"] = {
        "pred": args.pred,
        "gold_entities": args.gold_entities,
        "gold_docs": args.gold_docs,
    }
    json_uri = args.json or storage.join(args.pred, "eval.json")
    storage.write_json(json_uri, out)
    log.info("wrote %s", json_uri)
    return out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:
        evaluate(args)
    except InputError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
