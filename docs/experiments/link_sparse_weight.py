"""Tune the weight of the character n-gram score beside the dense score, on TRAIN only:
the train mentions of NCBI-disease and BC5CDR linked against the terminology's names
(without any train mention in the dictionary), zero-shot all-MiniLM-L6-v2.

    .venv/bin/python docs/experiments/link_sparse_weight.py ../shared/data MODEL_DIR
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pyarrow.parquet as pq
import torch

from pipeline.config import EmbedSettings, EncoderScheduling
from pipeline.linking.dictionary import read_dictionary
from pipeline.linking.retrieval import LinkIndex, search
from pipeline.stages.link import StringEncoder

WEIGHTS = (0.0, 0.25, 0.5, 1.0, 2.0, 1e6)  # 1e6: the n-gram score alone


def right(pred: str, gold: str, alt: dict[str, set[str]]) -> bool:
    parts = gold.replace("+", "|").split("|")
    return any(pred == p or pred in alt.get(p, ()) for p in parts)


def main(data: str, model: str) -> None:
    enc = StringEncoder(EmbedSettings(model, 512, 128, pooling="mean"), EncoderScheduling(16384))
    alt: dict[str, set[str]] = {}
    for r in pq.read_table(f"{data}/kb/disease_alt_ids.parquet").to_pylist():
        alt.setdefault(r["concept_id"], set()).add(r["alt_id"])
        alt.setdefault(r["alt_id"], set()).add(r["concept_id"])
    for kb, sets in (("disease", [("ncbi_disease", "Disease"), ("bc5cdr", "Disease")]),
                     ("chemical", [("bc5cdr", "Chemical")])):  # fmt: skip
        d = read_dictionary(f"{data}/kb/{kb}_names.parquet")
        t = time.time()
        index = LinkIndex.build(d, enc(d.names).astype(np.float16))
        print(f"{kb}: {len(d)} names embedded in {time.time() - t:.0f} s", flush=True)
        vectors = torch.from_numpy(index.vectors)
        for name, label in sets:
            ents = pq.read_table(f"{data}/{name}/train_entities.parquet").to_pandas()
            ents = ents[(ents.label == label) & (ents.concept_id != "-1")]
            mentions = ents.text.tolist()
            q = enc(mentions)
            row = []
            for w in WEIGHTS:
                found = search(index, vectors, q, mentions, [label] * len(q), 1, w)
                acc = np.mean([bool(f) and right(f[0].concept_id, g, alt)
                               for f, g in zip(found, ents.concept_id)])  # fmt: skip
                row.append(f"w={w:g}: {acc:.3f}")
            print(f"  {name} {label} (n={len(q)}): " + ", ".join(row), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
