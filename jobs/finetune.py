"""Fine-tune a token-classification model on Ray Train, windowed as the annotate job reads.

    python -m jobs.finetune --train-docs URI --train-entities URI --dev-docs URI
        --dev-entities URI --base-model M --output URI [--epochs N] [--seed S]

The output folder is a Hugging Face model (safetensors, config with id2label, tokenizer)
that ``python -m jobs.annotate --ner-model <folder>`` loads as it is, plus training.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from jobs.cli import DefaultsHelpFormatter
from pipeline.models import loading as models
from pipeline.training.finetune import FinetuneConfig, TrainScheduling, run_finetune

log = logging.getLogger("jobs.finetune")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.finetune",
        description="Fine-tune a token classifier (BIO over the entity labels found in the "
        "training data) on the annotate job's tokenization and windows, keep the epoch with "
        "the best dev strict F1. Lengths are in tokens.",
        formatter_class=DefaultsHelpFormatter,
    )
    d = p.add_argument_group("data (Parquet file or folder: local path, file://, s3://)")
    d.add_argument("--train-docs", required=True, help="training documents: doc_id, text")
    d.add_argument(
        "--train-entities", required=True, help="training gold spans: doc_id, start, end, label"
    )
    d.add_argument("--dev-docs", required=True, help="dev documents, scored after each epoch")
    d.add_argument("--dev-entities", required=True, help="dev gold spans")
    d.add_argument(
        "--max-train-docs", type=int, help="train on a seeded subsample of this many documents"
    )
    d.add_argument(
        "--max-dev-docs", type=int, help="score on a seeded subsample of this many documents"
    )
    m = p.add_argument_group("model and output")
    m.add_argument("--base-model", required=True, help="local HF folder, s3:// prefix or hub id")
    m.add_argument("--output", required=True, help="output folder (local or s3://)")
    m.add_argument("--trust-remote-code", action="store_true", help="allow model code")
    t = p.add_argument_group("training")
    t.add_argument(
        "--epochs", type=int, default=10, help="at most this many passes over the windows"
    )
    t.add_argument(
        "--patience",
        type=int,
        default=2,
        help="stop after this many epochs without a better dev strict F1 (0: never early)",
    )
    t.add_argument("--seed", type=int, default=13, help="weights of the new head, order, dropout")
    t.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak AdamW learning rate (default: 1e-4 for encoders under 768 wide, 5e-5 "
        "for BERT-base and wider)",
    )
    t.add_argument(
        "--batch-tokens",
        type=int,
        default=4096,
        help="padded tokens per optimizer step, all workers (windows of like length are "
        "batched together: 8 windows of 512 tokens, 64 of 64)",
    )
    t.add_argument(
        "--bf16",
        choices=("auto", "on", "off"),
        default="auto",
        help="bfloat16 autocast in training (auto: on GPUs; on CPUs with AVX512-BF16 'on' "
        "is 1.5x faster, off keeps float32)",
    )
    t.add_argument(
        "--attention-dropout",
        type=float,
        default=0.0,
        help="dropout on attention probabilities (the model's own value disables the fused "
        "attention kernel in training: quadratic memory, 1.9x slower on CPU)",
    )
    t.add_argument("--warmup-ratio", type=float, default=0.1, help="linear warmup, of all steps")
    t.add_argument("--weight-decay", type=float, default=0.01, help="AdamW decoupled decay")
    t.add_argument(
        "--max-length",
        type=int,
        default=None,
        help="tokens per window, special tokens included (default: the model config's "
        "position limit, at most 512 for BERT-style models); longer windows cost more per token",
    )
    t.add_argument(
        "--stride",
        type=int,
        default=128,
        help="overlap between consecutive windows, as in the annotate job (at most half a "
        "window); overlap makes long documents cost more",
    )
    t.add_argument(
        "--random-crops",
        type=int,
        default=1,
        help="extra training windows per document, of random length and offset, so that "
        "annotating with short windows (--max-length) keeps its accuracy; 0 = none",
    )
    t.add_argument(
        "--dev-batch-tokens", type=int, default=16384, help="token budget per dev forward pass"
    )
    s = p.add_argument_group("scheduling")
    s.add_argument("--num-workers", type=int, default=1, help="Ray Train workers (DDP)")
    s.add_argument("--use-gpu", action="store_true", help="one GPU per worker")
    s.add_argument(
        "--cpus-per-worker",
        type=int,
        default=None,
        help="CPUs reserved per worker, also its torch threads (default: this machine's "
        "cores shared among the workers, at most 8)",
    )
    s.add_argument(
        "--storage-path",
        help="Ray Train run storage (default: a temporary local folder; use s3:// on a "
        "multi-node cluster)",
    )
    s.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cpus = args.cpus_per_worker or max(1, min(8, (os.cpu_count() or 1) // args.num_workers))
    cfg = FinetuneConfig(
        train_docs=args.train_docs,
        train_entities=args.train_entities,
        dev_docs=args.dev_docs,
        dev_entities=args.dev_entities,
        base_model=str(models.resolve_model_dir(args.base_model)),
        output_uri=args.output,
        epochs=args.epochs,
        patience=args.patience,
        seed=args.seed,
        lr=args.lr,
        batch_tokens=args.batch_tokens,
        bf16=args.bf16,
        attention_dropout=args.attention_dropout,
        max_length=args.max_length,
        stride=args.stride,
        random_crops=args.random_crops,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        max_train_docs=args.max_train_docs,
        max_dev_docs=args.max_dev_docs,
        dev_batch_tokens=args.dev_batch_tokens,
        trust_remote_code=args.trust_remote_code,
    )
    sched = TrainScheduling(args.num_workers, args.use_gpu, cpus, args.storage_path)
    log.info("config: %s", json.dumps({"base_model_arg": args.base_model} | cfg.__dict__))
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # under `ray job submit`: join that cluster
    else:
        # A private local instance sized to the workers, never another user's cluster.
        ray.init(
            address="local",
            num_cpus=args.num_workers * cpus,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
        )
    summary = run_finetune(cfg, sched)
    print(
        json.dumps(
            {
                k: summary[k]
                for k in (
                    "best_epoch",
                    "best_dev_strict_f1",
                    "best_dev_lenient_f1",
                    "stop_reason",
                    "alignment",
                )  # fmt: skip
            }
            | {"output": args.output, "total_seconds": round(summary["total_seconds"], 1)},
            indent=2,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
