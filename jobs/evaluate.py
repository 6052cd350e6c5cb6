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

from pipeline.evaluation.output import evaluate
from pipeline.types import InputError


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


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:
        result = evaluate(args.pred, args.gold_entities, args.gold_docs, args.json)
    except InputError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(result.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
