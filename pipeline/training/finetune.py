"""Fine-tune a token classifier on Ray Train, on the annotate job's tokenization and windows.

The driver reads the tables, tokenizes every document with the job's ``Tokenize`` stage,
labels tokens from gold character spans (``pipeline.training.alignment``) and cuts the same
windows as the job (``pipeline.training.data``). Every window token keeps its
whole-document label, so a span continuing from the previous window starts with ``I-``;
only special tokens and padding are left out of the loss. The workers' loop is
``pipeline.training.loop``; the best dev epoch's weights are written with
``training.json``. Lengths are in tokens; offsets in characters.
"""

from __future__ import annotations

import logging
import resource
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.models import loading as models
from pipeline.stages.tokenize import special_tokens
from pipeline.storage import files as storage
from pipeline.training.alignment import AlignmentReport, bio_labels
from pipeline.training.data import build_windows, doc_labels, read_split, seeded, tokenize_docs
from pipeline.training.loop import SCORE_KEY, TrainLoop, train_worker

log = logging.getLogger(__name__)

TRAINING_JSON = "training.json"


@dataclass(frozen=True)
class FinetuneConfig:
    """What is trained. ``base_model`` is a local folder (already resolved)."""

    train_docs: str
    train_entities: str
    dev_docs: str
    dev_entities: str
    base_model: str
    output_uri: str
    epochs: int = 10  # at most: training stops earlier when dev stops improving
    patience: int = 2  # epochs without a better dev strict F1 that end training; 0: never
    seed: int = 13
    lr: float | None = None  # None: default_lr(the base model's config)
    batch_tokens: int = 4096  # padded tokens per optimizer step, over all workers
    max_length: int | None = None  # tokens per window incl. specials; None = model config
    stride: int = 128  # window overlap, tokens (clamped to half a window)
    random_crops: int = 1  # extra windows per document, random length and offset
    warmup_ratio: float = 0.1  # of all optimizer steps
    weight_decay: float = 0.01
    max_train_docs: int | None = None  # seeded subsample of training documents
    max_dev_docs: int | None = None  # seeded subsample of dev documents
    dev_batch_tokens: int = 16384  # token budget per dev forward pass
    bf16: str = "auto"  # autocast to bfloat16: "auto" (on GPUs), "on", "off"
    attention_dropout: float = 0.0  # on attention probabilities; 0 keeps fused attention
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TrainScheduling:
    """How training is spread; never changes what one worker computes per window."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1  # also torch's intra-op threads per worker
    storage_path: str | None = None  # Ray Train run storage; shared (s3://) on multi-node


@dataclass(frozen=True)
class _Prepared:
    """The driver's work before training: the workers' loop, and what training.json
    reports of the data."""

    loop: TrainLoop
    window: int  # text tokens per window (max_length less special tokens)
    counts: dict[str, int]
    alignment: dict[str, Any]


def _check(cfg: FinetuneConfig, sched: TrainScheduling) -> None:
    if sched.num_workers < 1:
        raise ValueError("training needs at least one Ray Train worker")
    if cfg.random_crops < 0:
        raise ValueError(f"--random-crops must be 0 or more, got {cfg.random_crops}")
    if cfg.bf16 not in ("auto", "on", "off"):
        raise ValueError(f"--bf16 must be auto, on or off, got {cfg.bf16!r}")
    if not 0.0 <= cfg.attention_dropout < 1.0:
        raise ValueError(f"--attention-dropout must be in [0, 1), got {cfg.attention_dropout}")


def default_lr(config: dict[str, Any]) -> float:
    """Peak learning rate for an encoder of this config: 1e-4 below BERT-base's 768
    hidden units (MiniLM-L6 reached its results with it), 5e-5 from there on (stable on
    a random-weight BERT-base, and the top of the usual BERT fine-tuning range);
    docs/finetuning.md has the measurements."""
    width = models.hidden_size(config) or 768
    return 1e-4 if width < 768 else 5e-5


def prepare(cfg: FinetuneConfig, sched: TrainScheduling) -> _Prepared:
    """Read, tokenize, label and window the training and dev documents."""
    _check(cfg, sched)
    base = Path(cfg.base_model)
    tokenizer = models.load_tokenizer(base, cfg.trust_remote_code)
    model_config = models.read_config(base)
    max_length = cfg.max_length or models.default_max_length(model_config)
    prefix, suffix = special_tokens(tokenizer)
    window = max_length - len(prefix) - len(suffix)
    if window < 1:
        raise ValueError(f"max length {max_length} tokens leaves no room beside special tokens")
    train_docs, train_ents, train_orphans = read_split(
        cfg.train_docs, cfg.train_entities, cfg.max_train_docs, cfg.seed
    )
    dev_docs, dev_ents, dev_orphans = read_split(
        cfg.dev_docs, cfg.dev_entities, cfg.max_dev_docs, cfg.seed
    )
    labels = _labels(train_ents)
    label2id = {v: k for k, v in enumerate(labels)}
    train_batch = tokenize_docs(train_docs, str(base), cfg.trust_remote_code)
    dev_batch = tokenize_docs(dev_docs, str(base), cfg.trust_remote_code)
    train_labels, train_report = doc_labels(train_batch, train_ents, label2id)
    _, dev_report = doc_labels(dev_batch, dev_ents, label2id)
    _count_orphans(train_report, train_orphans)
    _count_orphans(dev_report, dev_orphans)
    x, y = build_windows(
        train_batch, train_labels, window, cfg.stride, (prefix, suffix), cfg.random_crops,
        seeded(cfg.seed, 7),
    )  # fmt: skip
    if len(x) < sched.num_workers:
        raise ValueError(f"{len(x)} training windows cannot feed {sched.num_workers} workers")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    # auto: GPUs only; CPUs without bf16 units run it slower than fp32
    bf16 = cfg.bf16 == "on" or (cfg.bf16 == "auto" and sched.use_gpu)
    lr = cfg.lr if cfg.lr is not None else default_lr(model_config)
    loop = TrainLoop(
        base_model=str(base), labels=labels, windows=(x, y), dev=dev_batch, gold=dev_ents,
        max_length=max_length, stride=cfg.stride, pad_id=pad, epochs=cfg.epochs,
        patience=cfg.patience, seed=cfg.seed, lr=lr,
        batch_tokens=cfg.batch_tokens, warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, dev_batch_tokens=cfg.dev_batch_tokens,
        threads=sched.cpus_per_worker, bf16=bf16,
        attention_dropout=cfg.attention_dropout, trust_remote_code=cfg.trust_remote_code,
    )  # fmt: skip
    counts = {
        "train_docs": train_docs.num_rows,
        "train_windows": len(x),
        "train_tokens": int(sum(len(r) for r in x)),
        "dev_docs": dev_docs.num_rows,
    }
    alignment = {"train": train_report.to_dict(), "dev": dev_report.to_dict()}
    return _Prepared(loop, window, counts, alignment)


def _labels(entities: pa.Table) -> list[str]:
    types = sorted(set(pc.unique(entities[S.LABEL]).to_pylist()))
    if not types:
        raise ValueError("the training entities hold no labels")
    return bio_labels(types)


def _count_orphans(report: AlignmentReport, orphans: int) -> None:
    """Spans whose document is not in the docs table count as unaligned spans."""
    report.n_spans += orphans
    report.no_document += orphans


def fit(
    loop: Any,
    sched: TrainScheduling,
    storage_path: str,
    worker: Callable[[dict[str, Any]], Any] = train_worker,
    name: str = "finetune",
) -> Any:
    """Run ``worker`` on Ray Train with ``{"loop": loop}``; Ray keeps the last
    checkpoint reported, which the workers report only for a better epoch."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    trainer = TorchTrainer(
        worker,
        train_loop_config={"loop": loop},
        scaling_config=ScalingConfig(
            num_workers=sched.num_workers,
            use_gpu=sched.use_gpu,
            resources_per_worker={"CPU": sched.cpus_per_worker},  # use_gpu adds 1 GPU each
        ),
        run_config=RunConfig(
            name=f"{name}-{int(time.time())}",
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    return trainer.fit()


def run_finetune(cfg: FinetuneConfig, sched: TrainScheduling) -> dict[str, Any]:
    """Prepare, train on Ray Train (Ray must be initialised, or Ray's auto-init starts a
    local instance), write the best epoch's HF model folder and ``training.json`` to
    ``cfg.output_uri``; return the summary that ``training.json`` holds."""
    t_start = time.perf_counter()
    prep = prepare(cfg, sched)
    storage_path = sched.storage_path or tempfile.mkdtemp(prefix="finetune-ray-")
    t_fit = time.perf_counter()
    result = fit(prep.loop, sched, storage_path)
    fit_seconds = time.perf_counter() - t_fit
    out = result.return_value or {}
    history = out.get("history", [])
    best = max(history, key=lambda h: (h[SCORE_KEY], -h["epoch"])) if history else None
    if result.checkpoint is None or best is None or result.metrics["epoch"] != best["epoch"]:
        raise RuntimeError("training ended without the best epoch's checkpoint")
    summary = {
        "config": asdict(cfg),
        "scheduling": asdict(sched),
        "labels": prep.loop.labels,
        "max_length": prep.loop.max_length,
        "window_tokens": prep.window,
        "counts": prep.counts,
        "alignment": prep.alignment,
        "lr": prep.loop.lr,
        "bf16": prep.loop.bf16,
        "epochs": history,
        "stopped": out.get("stopped"),
        "stop_reason": out.get("stop_reason"),
        "best_epoch": best["epoch"],
        "best_dev_strict_f1": best[SCORE_KEY],
        "best_dev_lenient_f1": best["dev_lenient_f1"],
        "fit_seconds": fit_seconds,
        "peak_rss_mib": {
            "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rank0": out.get("peak_rss_mib"),
        },
        "base_model_sha256": models.weights_hash(Path(cfg.base_model)),
    }
    publish(result.checkpoint, cfg.output_uri, summary, t_start)
    if sched.storage_path is None:
        shutil.rmtree(storage_path, ignore_errors=True)
    return summary


def publish(checkpoint: Any, output_uri: str, summary: dict[str, Any], t_start: float) -> None:
    """Upload the checkpoint's folder to ``output_uri``, then ``training.json`` with the
    run's total seconds (counted from ``t_start``, a ``perf_counter`` reading)."""
    with checkpoint.as_directory() as ckpt:
        storage.upload_folder(ckpt, output_uri)
    summary["total_seconds"] = time.perf_counter() - t_start
    # Written last: a folder with training.json holds a complete model.
    storage.write_json(storage.join(output_uri, TRAINING_JSON), summary)
