"""The ceiling of linking: the share of dev mentions (id -1 left out) whose gold concept,
one of its alternates, or one part of a composite id is in the dictionary at all.

    .venv/bin/python docs/experiments/link_ceiling.py DICTIONARY DEV_ENTITIES [ALT_IDS]
"""

from __future__ import annotations

import sys
from collections import defaultdict

import pyarrow.parquet as pq

from pipeline.linking.dictionary import read_dictionary


def main(dictionary: str, entities: str, alt_ids: str | None = None) -> None:
    known = set(read_dictionary(dictionary).concept_ids)
    alt: dict[str, set[str]] = defaultdict(set)
    if alt_ids:
        for r in pq.read_table(alt_ids).to_pylist():
            alt[r["concept_id"]].add(r["alt_id"])
            alt[r["alt_id"]].add(r["concept_id"])
    by_label: dict[str, list[bool]] = defaultdict(list)
    for r in pq.read_table(entities).to_pylist():
        gold = r["concept_id"]
        if gold is None or gold == "-1":
            continue
        parts = gold.replace("+", "|").split("|")
        ok = any(p in known or alt[p] & known for p in parts)
        by_label[r["label"]].append(ok)
    for label, oks in sorted(by_label.items()):
        print(f"{label}: {sum(oks)} of {len(oks)} mentions linkable ({sum(oks) / len(oks):.3f})")


if __name__ == "__main__":
    main(*sys.argv[1:])
