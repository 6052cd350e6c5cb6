"""Two ways past fp32 on a CPU without bf16 hardware, measured against fp32 eager: dynamic
int8 quantisation of the Linear layers, and ``torch.compile``. Neither is offered by the
job; this script is why.

    PYTHONPATH=. python docs/experiments/cpu_int8_compile.py NER_MODEL_DIR DOCS.parquet

NER_MODEL_DIR: a fine-tuned token classifier (``python -m jobs.finetune`` writes one);
a random head would make near-ties of every token and say nothing about agreement.
The first 200 documents, truncated to 256 tokens, in length-sorted batches of 16; the
forward passes alone, twice each (the first compiled pass compiles). Agreement: the share
of tokens whose argmax label equals fp32's, and of fp32's entity (non-O) tokens.
"""

import sys
import time
import warnings

import numpy as np
import pyarrow.parquet as pq
import torch
from transformers import AutoModelForTokenClassification, AutoTokenizer

warnings.filterwarnings("ignore")  # torch.ao.quantization's deprecation notice
model_dir, docs = sys.argv[1], sys.argv[2]
tok = AutoTokenizer.from_pretrained(model_dir)
fp32 = AutoModelForTokenClassification.from_pretrained(model_dir).eval()
texts = pq.read_table(docs).column("text").to_pylist()[:200]
encoded = [tok(t, truncation=True, max_length=256)["input_ids"] for t in texts]
order = np.argsort([len(e) for e in encoded])
batches = []
for i in range(0, len(order), 16):
    rows = [encoded[j] for j in order[i : i + 16]]
    ids = torch.zeros(len(rows), max(map(len, rows)), dtype=torch.long)
    mask = torch.zeros_like(ids)
    for k, row in enumerate(rows):
        ids[k, : len(row)], mask[k, : len(row)] = torch.tensor(row), 1
    batches.append((ids, mask))


def labels(model) -> torch.Tensor:
    out = []
    with torch.inference_mode():
        for ids, mask in batches:
            out.append(model(input_ids=ids, attention_mask=mask).logits.argmax(-1)[mask.bool()])
    return torch.cat(out)


variants = {
    "fp32 eager": fp32,
    "int8 dynamic": torch.ao.quantization.quantize_dynamic(fp32, {torch.nn.Linear}, torch.qint8),
    "fp32 compiled": torch.compile(fp32, dynamic=True),
}
print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {len(texts)} docs")
ref = None
for name, model in variants.items():
    for attempt in (1, 2):
        t0 = time.perf_counter()
        got = labels(model)
        seconds = time.perf_counter() - t0
        ref = got if ref is None else ref
        entity = ref != fp32.config.label2id.get("O", 0)
        agree = (got == ref).float().mean().item()
        agree_entity = (got[entity] == ref[entity]).float().mean().item()
        print(
            f"{name:14s} pass {attempt}: {seconds:6.2f} s, tokens agreeing {agree:.4f}, "
            f"entity tokens agreeing {agree_entity:.4f}"
        )
