"""Score an annotate output folder against gold entity spans.

    python -m jobs.evaluate --pred ANNOTATE_OUTPUT_URI --gold-entities URI [--gold-docs URI]
                            [--json OUT] [--alt-ids URI ...] [--train-entities URI]

Prints a table (strict and lenient P/R/F1 per label and micro, in percent) and writes the
same numbers as fractions (0-1), with counts, to ``OUT`` (default ``<pred>/eval.json``).
Spans are character offsets, end exclusive. The documents scored are those of
``--gold-docs``; without it, the union of the gold entity docs and the docs in
``<pred>/documents``. Exits non-zero, naming the URI and the column, when an input lacks
a column.

When the gold and the predicted entities both have ``concept_id`` (annotate ran linking),
it also scores linking: acc@1 and acc@5 (``<pred>/links``) on the gold spans (annotate
with ``--spans`` = the gold entities, so that every gold span has an entity), and strict
P/R/F1 where an entity counts only with the right span, label and concept. Gold id ``-1``
is left out and counted; a composite id (``D1|D2``, ``D1+D2``) is right for any part.
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
    ap.add_argument(
        "--alt-ids",
        action="append",
        default=[],
        metavar="URI",
        help="Parquet with concept_id, alt_id: ids of one concept that all count as right "
        "(either way round); repeat for several files. Without it only the exact id counts",
    )
    ap.add_argument(
        "--train-entities",
        metavar="URI",
        help="Parquet of the train entities (text column): adds linking scores on the gold "
        "mentions whose normalised text never occurs in train, where memorising fails",
    )
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    args = _parse_args(argv)
    try:
        result = evaluate(
            args.pred,
            args.gold_entities,
            args.gold_docs,
            args.json,
            alt_ids=args.alt_ids,
            train_entities=args.train_entities,
        )
    except InputError as exc:
        print(f"evaluate: error: {exc}", file=sys.stderr)
        return 2
    print(result.table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
