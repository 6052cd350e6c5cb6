"""Training steps on the real NCBI-disease train windows (the finetune job's own windows,
crops included), one worker in process, under the variants that chose the defaults.

    PYTHONPATH=. python docs/experiments/train_step_speed.py ../shared/data/ncbi_disease VARIANT

VARIANT: ``dropout`` (attention-probability dropout at MiniLM's own 0.1, as training ran
before), ``eager`` (the same with transformers' eager attention), ``nodrop`` (the default
now: no attention dropout, so PyTorch's fused attention serves training), ``nodrop-bf16``
(and bf16 autocast). The batches are the old ones, 16 windows sorted by length within
blocks of 512 windows, so that the variants differ only in the model's step. Prints real
tokens per second and peak RSS. 2026-12-04, 2 cores, 8 steps each, MiniLM: dropout 585
tokens/s, 4.8 GB; bf16 with dropout 826; eager 635; nodrop 1,110, 2.5 GB; nodrop-bf16
1,711, 1.9 GB.
"""

import resource
import sys
import time

import numpy as np
import torch

from pipeline.sample.defaults import default_embed_model
from pipeline.training.data import seeded
from pipeline.training.finetune import FinetuneConfig, TrainScheduling, prepare
from pipeline.training.loop import _load, _pad


def old_batches(lengths: np.ndarray, size: int, rng: np.random.Generator) -> list[np.ndarray]:
    perm = rng.permutation(len(lengths))
    out = []
    for c in range(0, len(perm), size * 32):
        part = perm[c : c + size * 32]
        part = part[np.argsort(-lengths[part], kind="stable")]
        out += [part[i : i + size] for i in range(0, len(part), size)]
    return [out[i] for i in rng.permutation(len(out))]


def main(data: str, variant: str, n_steps: int = 8) -> None:
    cfg = FinetuneConfig(
        f"{data}/train_docs.parquet", f"{data}/train_entities.parquet",
        f"{data}/dev_docs.parquet", f"{data}/dev_entities.parquet",
        default_embed_model(), "/tmp/train-step-speed",
        attention_dropout=0.0 if variant.startswith("nodrop") else 0.1,
    )  # fmt: skip
    loop = prepare(cfg, TrainScheduling(1, False, 2)).loop
    x, y = loop.windows
    lengths = np.array([len(r) for r in x])
    print(f"{len(x)} windows, {lengths.sum()} tokens, mean {lengths.mean():.0f}", flush=True)
    torch.set_num_threads(2)
    model, _ = _load(loop)
    if variant == "eager":
        model.config._attn_implementation = "eager"
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    batches = old_batches(lengths, 16, seeded(13, 1))[:n_steps]
    t0, tokens = time.perf_counter(), 0
    for b in batches:
        ids = torch.from_numpy(_pad([x[i] for i in b], 0))
        labels = torch.from_numpy(_pad([y[i] for i in b], -100))
        mask = torch.from_numpy(_pad([np.ones(len(x[i])) for i in b], 0))
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=variant.endswith("bf16")):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        tokens += int(lengths[b].sum())
    dt = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{variant}: {n_steps} steps, {tokens / dt:.0f} real tokens/s, peak RSS {peak:.0f} MiB")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 8)
