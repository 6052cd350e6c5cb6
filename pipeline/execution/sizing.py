"""How much of everything a run uses: actors, documents per batch, tokens per forward
pass, from the cluster's resources, the input and the models (pure: no Ray import, so
the benchmark can size its rows as the job does where Ray is not installed)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pipeline.config import (
    CPU_BATCH_TOKENS,
    CPU_DOCS_PER_BATCH,
    GPU_ACTIVATION_BYTES,
    GPU_DOCS_PER_BATCH,
    GPU_MAX_BATCH_TOKENS,
    AnnotateConfig,
    Scheduling,
)
from pipeline.models import loading as models
from pipeline.types import InputError, RunPlan

# Logical CPUs reserved by the light stages (reader, tokenizers, writer) on CPU-only runs.
LIGHT_CPUS = 0.25


def resolved_dtype(dtype: str, cluster: dict[str, float]) -> str:
    """The precision the inference actors compute in: ``auto`` is bf16 where the actors
    get GPUs (the cluster has some), fp32 on CPUs."""
    if dtype != "auto":
        return dtype
    return "bfloat16" if int(cluster.get("GPU", 0)) else "float32"


def check_precision(rp: RunPlan, dtype: str) -> None:
    """Refuse to add rows computed in ``dtype`` to an output whose committed shards were
    computed in another precision (``--dtype auto`` resumed on other hardware)."""
    other = [r["dtype"] for r in rp.committed.values() if r.get("dtype", dtype) != dtype]
    if other:
        raise InputError(
            f"{len(other)} committed shards of this output were computed in "
            f"{', '.join(sorted(set(other)))}, this "
            f"run would compute in {dtype}: pass --dtype {min(other)} to keep one precision "
            "throughout, or --mode overwrite to recompute all"
        )


def actor_args(
    sched: Scheduling, n_models: int, cluster: dict[str, float], extra_light: int = 0
) -> tuple[int, dict[str, Any], int | None]:
    """Actor count, resources per model actor, and torch threads: one GPU per actor when
    the cluster (its ``ray.cluster_resources()``) has GPUs, else the CPUs left by the
    light stages (reader, writer, a tokenizer per model, and ``extra_light`` more, such
    as the entity stage) split between models."""
    gpus = int(cluster.get("GPU", 0))
    if gpus:
        n = sched.num_actors or max(1, gpus // max(1, n_models))
        share = sched.gpus_per_actor or gpu_share(n * n_models, gpus)
        return n, {"num_gpus": share, "num_cpus": 1}, None
    n = sched.num_actors or 1
    cpus = float(cluster.get("CPU", 1))
    light = LIGHT_CPUS * (2 + n_models + extra_light)
    share = max(LIGHT_CPUS, (cpus - light) / max(1, n_models * n))
    threads = max(1, int(cpus // max(1, n_models * n)))
    return n, {"num_gpus": 0, "num_cpus": share}, threads


def gpu_share(n_actors: int, gpus: int) -> float:
    """The GPU fraction each of ``n_actors`` inference actors asks for so that all of them
    fit on ``gpus`` GPUs: a whole one while there are enough, else 1/k with k actors on
    each GPU. With a whole GPU each, the NER and embedding actors on a one-GPU machine
    could never both start, and the job would wait forever. 1/k rather than gpus/n: Ray
    places fractions GPU by GPU, so 0.75 each would fit one actor a GPU, not four on three."""
    return 1.0 / math.ceil(max(1, n_actors) / max(1, gpus))


# Tokenizer actors per inference actor on GPU clusters. In process on a 16-core Xeon,
# tokenizing 1,000 documents took 0.7-1.9 s, a BERT-base stage on an H200 0.5-1.0 s.
GPU_TOKENIZERS_PER_ACTOR = 2


def tokenizer_actors(sched: Scheduling, n_actors: int, gpus: int) -> int:
    """Actors per tokenize stage: as asked; else on GPUs enough to keep every inference
    actor fed, and on CPUs one (tokenizing is a small share of a CPU pass, and the
    CPUs are better spent on the models)."""
    if sched.tokenizer_actors:
        return sched.tokenizer_actors
    return GPU_TOKENIZERS_PER_ACTOR * n_actors if gpus else 1


# Batches wanted per model actor: with fewer, the models' actors wait on one another (on
# a one-batch input the embedding actor starts when the NER actor has finished).
MIN_BATCHES_PER_ACTOR = 4


def docs_per_batch(sched: Scheduling, n_docs: int, n_models: int, cluster: dict[str, float]) -> int:
    """Documents per Ray Data batch: the one asked for; else the device default, made
    smaller when ``n_docs`` are too few to give every model actor (``n_models`` models'
    pools on a cluster with ``cluster`` resources) ``MIN_BATCHES_PER_ACTOR`` batches."""
    if sched.docs_per_batch:
        return sched.docs_per_batch
    gpus = int(cluster.get("GPU", 0))
    default = GPU_DOCS_PER_BATCH if gpus else CPU_DOCS_PER_BATCH
    n_actors = actor_args(sched, n_models, cluster)[0] * max(1, n_models)
    return max(1, min(default, math.ceil(n_docs / (MIN_BATCHES_PER_ACTOR * n_actors))))


def run_batch_size(rp: RunPlan, sched: Scheduling, cluster: dict[str, float]) -> int:
    """``docs_per_batch`` for this run, sized on the whole input, committed shards
    included: a rerun then cuts the batches the first run cut, and its numbers are the
    same to the last bit (a batch's composition changes how its windows are packed, so
    the floats' rounding)."""
    n_docs = sum(s.n_rows for s in rp.shards)
    return docs_per_batch(sched, n_docs, len(rp.models), cluster)


# Vectors of the model's width alive at once per token inside a layer, about: hidden
# states, Q, K, V, attention output, the feed-forward's 4x expansion and its activation.
ACTIVATIONS_PER_TOKEN = 16
MIN_BATCH_TOKENS = 1024


def batch_tokens(sched: Scheduling, width: int | None, dtype: str, gpus: int) -> int:
    """Tokens per forward pass for a model ``width`` wide: the budget asked for; on CPUs
    ``CPU_BATCH_TOKENS``; on GPUs the largest power of two up to ``GPU_MAX_BATCH_TOKENS``
    whose activations fit in ``GPU_ACTIVATION_BYTES`` (in bf16: BERT-base and -large
    65536, a 4096-wide model 16384); a model of unknown width is taken as 4096 wide. The
    estimate leaves out attention scores, which SDPA attention never holds whole; eager
    attention holds more (GatorTron-base about 4x: 9.5 GB at 65536, docs/families.md)."""
    if sched.batch_tokens:
        return sched.batch_tokens
    if not gpus:
        return CPU_BATCH_TOKENS
    per_value = 4 if dtype == "float32" else 2  # auto is bf16 on GPUs
    fit = GPU_ACTIVATION_BYTES // (ACTIVATIONS_PER_TOKEN * (width or 4096) * per_value)
    return max(MIN_BATCH_TOKENS, min(GPU_MAX_BATCH_TOKENS, 1 << (max(fit, 1).bit_length() - 1)))


def run_batch_tokens(
    rp: RunPlan, cfg: AnnotateConfig, sched: Scheduling, cluster: dict[str, float]
) -> dict[str, int]:
    """``batch_tokens`` of each model of the run, by role (the model's width is read
    from its config only where it decides)."""
    gpus = int(cluster.get("GPU", 0))
    width: dict[str, int | None] = dict.fromkeys(rp.models)
    if gpus and not sched.batch_tokens:
        width = {
            r: models.hidden_size(models.read_config(Path(i.local_dir)))
            for r, i in rp.models.items()
        }
    return {r: batch_tokens(sched, w, cfg.dtype, gpus) for r, w in width.items()}
