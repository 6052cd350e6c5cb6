"""What holds a training worker's memory: RSS over steps of varying shape, as token-budget
batches make them (random lengths 20-512, windows x length within 4096 tokens), MiniLM,
no attention dropout (the finetune job's defaults), one process.

    PYTHONPATH=. python docs/experiments/train_memory.py 60
    MALLOC_MMAP_THRESHOLD_=131072 PYTHONPATH=. python docs/experiments/train_memory.py 60

2026-12-04, 2 cores, a busy machine: RSS grew with the steps (1.7 GB after 10, 2.4 GB
after 60: glibc's heap keeps freed activations of one shape, split, for the next), while
with large blocks served by mmap it stayed at 0.66 GB (peak 1.34 GB) but 40 steps took
167-184 s instead of 141-155 s. ``MALLOC_ARENA_MAX=2`` did not help (2.5 GB after 60).
"""

import resource
import sys
import time

import numpy as np
import torch
from transformers import AutoModelForTokenClassification

from pipeline.sample.defaults import default_embed_model


def rss() -> str:
    with open("/proc/self/statm") as f:
        current = int(f.read().split()[1]) * resource.getpagesize() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return f"RSS {current:.0f} MiB, peak {peak:.0f} MiB"


def main(n_steps: int) -> None:
    torch.set_num_threads(2)
    model = AutoModelForTokenClassification.from_pretrained(
        default_embed_model(), num_labels=3, attention_probs_dropout_prob=0.0
    )
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    rng = np.random.default_rng(0)
    model.train()
    t0 = time.perf_counter()
    for step in range(1, n_steps + 1):
        length = int(rng.integers(20, 513))
        ids = torch.from_numpy(rng.integers(1000, 20000, size=(max(1, 4096 // length), length)))
        mask = torch.ones_like(ids)
        loss = model(input_ids=ids, attention_mask=mask, labels=torch.zeros_like(ids)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % 10 == 0:
            print(f"step {step}: {rss()}, {time.perf_counter() - t0:.0f} s", flush=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 60)
