"""Build a link dictionary: terminology names, plus annotated mentions with their ids.

    python -m jobs.dictionary --names URI [URI ...] [--mentions URI ...] --output URI

``--names``: Parquet with concept_id, name (optional label), one row per synonym.
``--mentions``: gold entity tables (concept_id, text, label), e.g. a corpus's training
split: each mention with one concept becomes a name of it (null, ``-1`` and composite
``A|B`` / ``A+B`` ids are left out). The output is one Parquet file that
``jobs.annotate --link-dictionary`` and ``jobs.finetune --task linking --dictionary``
read; a pair given several times (a mention annotated N times) is kept N times: the job
counts it, and the count orders concepts that share an exact name.
"""

from __future__ import annotations

import argparse
import sys

import pyarrow as pa

from pipeline.linking.dictionary import CONCEPT_ID, LABEL, NAME, from_table, mention_names
from pipeline.storage import files as storage
from pipeline.types import InputError

OUTPUT = pa.schema([(CONCEPT_ID, pa.string()), (NAME, pa.string()), (LABEL, pa.string())])


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.dictionary", description=__doc__.split("\n")[0]
    )
    p.add_argument("--names", nargs="+", required=True, help="terminology Parquet files/prefixes")
    p.add_argument("--mentions", nargs="*", default=[], help="gold entity tables to add")
    p.add_argument("--output", required=True, help="the dictionary's Parquet file")
    return p


def _read(uri: str) -> pa.Table:
    if not storage.exists(uri):
        raise InputError(f"not found: {uri}")
    return storage.read_parquet_table(uri)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        parts = []
        for uri in args.names:
            t = _read(uri)
            from_table(t, uri)  # the same checks the job makes
            labels = t.column(LABEL) if LABEL in t.column_names else pa.nulls(t.num_rows)
            parts.append(pa.table({CONCEPT_ID: t.column(CONCEPT_ID), NAME: t.column(NAME),
                                   LABEL: labels}))  # fmt: skip
        for uri in args.mentions:
            parts.append(mention_names(_read(uri), uri))
        table = pa.concat_tables(parts, promote_options="permissive")
        merged = from_table(table, args.output)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # every row is kept: a pair given N times (a mention annotated N times) counts N
    storage.write_parquet_table(args.output, table.cast(OUTPUT))
    r = merged.report
    print(
        f"wrote {args.output}: {r.names} names of {r.concepts} concepts, {r.rows} rows "
        f"({r.duplicates} repeat a pair: counted, {r.empty_names} empty names and "
        f"{r.null_ids} rows without concept_id left out by the job)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
