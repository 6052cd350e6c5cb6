"""Section detection on MTSamples, checked against the notes' own capitalised headers.

    python docs/experiments/context_sections.py ../shared/data/mtsamples/mtsamples.parquet

Silver boundaries: every run of capitalised words followed by a colon that opens the text
or follows ``.`` or ``,`` (MTSamples joins its sections with ``.,``; ``WORD WORD:``).
Prints, over the distinct notes (``duplicate_of`` null):

* recall: of the silver headers whose title names a canonical section (by
  ``pipeline/context/sections.tsv``), the share the detector opens a section at;
* precision: of the sections the detector finds, the share whose title starts at a
  silver header;
* the canonical sections found most often, and the silver titles left unnamed.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter

import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.context import lexicon
from pipeline.context.sections import find_headers, sections_of

SILVER = re.compile(r"(?:^|(?<=[.,]))\s*([A-Z][A-Z]+(?:[ /&-][A-Z]+)*)\s*:")


def main(path: str) -> None:
    table = pq.read_table(path)
    if "duplicate_of" in table.column_names:
        table = table.filter(pc.is_null(table.column("duplicate_of")))
    texts = [t for t in table.column("text").to_pylist() if t]
    titles = lexicon.load().titles
    n_silver_named = found = n_detected = detected_silver = 0
    by_section: Counter[str] = Counter()
    unnamed: Counter[str] = Counter()
    t0 = time.perf_counter()
    for text in texts:
        sections = sections_of(text, find_headers(text, titles))
        starts = {s.title_start for s in sections}
        silver = {m.start(1): m.group(1) for m in SILVER.finditer(text)}
        for start, title in silver.items():
            if lexicon.normalise_title(title) in titles:
                n_silver_named += 1
                found += start in starts
            else:
                unnamed[title] += 1
        n_detected += len(sections)
        detected_silver += sum(s.title_start in silver for s in sections)
        by_section.update(s.section for s in sections)
    dt = time.perf_counter() - t0
    print(f"{len(texts)} distinct notes, {sum(map(len, texts)) / 1e6:.2f} M characters, {dt:.1f} s")
    print(f"silver headers naming a canonical section: {n_silver_named}")
    print(f"recall of those: {found / max(n_silver_named, 1):.3f} ({found})")
    print(
        f"detected sections: {n_detected}; whose title is a silver header: "
        f"{detected_silver / max(n_detected, 1):.3f} ({detected_silver})"
    )
    print("most found:", ", ".join(f"{k} {v}" for k, v in by_section.most_common(8)))
    print("silver titles left unnamed (most frequent):",
          ", ".join(f"{k} {v}" for k, v in unnamed.most_common(10)))  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
