"""Fine-tune a model on Ray Train: a token classifier, windowed as the annotate job reads,
or (``--task linking``) an encoder for concept linking, SapBERT-style.

    python -m jobs.finetune --train-docs URI --train-entities URI --dev-docs URI
        --dev-entities URI --base-model M --output URI [--epochs N] [--seed S]
    python -m jobs.finetune --task linking --train-entities URI --train-docs URI
        --dictionary URI --base-model M --output DIR [--epochs N] [--seed S]

The NER output folder is a Hugging Face model (safetensors, config with id2label,
tokenizer) that ``python -m jobs.annotate --ner-model <folder>`` loads as it is; the
linking one an encoder folder with the base's pooling declaration, for ``--link-model``.
Both hold training.json.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

from jobs.cli import DefaultsHelpFormatter
from pipeline.models import loading as models
from pipeline.training import link_finetune as link
from pipeline.training.finetune import FinetuneConfig, TrainScheduling, run_finetune

log = logging.getLogger("jobs.finetune")
NER_EPOCHS = 10
LINK = link.LinkFinetuneConfig("", "", "", "", "")  # the linking defaults, for the help


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs.finetune",
        description="Fine-tune a token classifier (BIO over the entity labels found in the "
        "training data) on the annotate job's tokenization and windows, keep the epoch with "
        "the best dev strict F1; or, with --task linking, an encoder whose pooled vectors "
        "put the names and mentions of one concept together (SapBERT's multi-similarity "
        "loss over the dictionary's synonyms and the training mentions' gold concept_id). "
        "Lengths are in tokens.",
        formatter_class=DefaultsHelpFormatter,
    )
    p.add_argument(
        "--task",
        choices=("ner", "linking"),
        default="ner",
        help="ner: token classifier for --ner-model; linking: encoder for --link-model",
    )
    d = p.add_argument_group("data (Parquet file or folder: local path, file://, s3://)")
    d.add_argument("--train-docs", required=True, help="training documents: doc_id, text")
    d.add_argument(
        "--train-entities",
        required=True,
        help="training gold spans: doc_id, start, end, label (linking: concept_id; mentions "
        "with none, '-1' or a composite id 'A|B' are skipped and counted)",
    )
    d.add_argument(
        "--dev-docs",
        help="dev documents, scored after each epoch (required for ner; for linking: "
        "acc@1 each epoch, the best epoch kept, else the last)",
    )
    d.add_argument("--dev-entities", help="dev gold spans (with --dev-docs)")
    d.add_argument(
        "--dictionary",
        help="linking: the concept dictionary, concept_id, name (and label); scoring dev "
        "embeds every name each epoch",
    )
    d.add_argument(
        "--max-train-docs",
        type=int,
        help="ner: train on a seeded subsample of this many documents",
    )
    d.add_argument(
        "--max-dev-docs", type=int, help="ner: score on a seeded subsample of this many documents"
    )
    m = p.add_argument_group("model and output")
    m.add_argument("--base-model", required=True, help="local HF folder, s3:// prefix or hub id")
    m.add_argument("--output", required=True, help="output folder (local or s3://)")
    m.add_argument("--trust-remote-code", action="store_true", help="allow model code")
    t = p.add_argument_group("training")
    t.add_argument(
        "--epochs",
        type=int,
        default=None,
        help=f"at most this many passes over the windows (default {NER_EPOCHS}), or for "
        f"linking over the pairs (default {LINK.epochs})",
    )
    t.add_argument(
        "--patience",
        type=int,
        default=2,
        help="stop after this many epochs without a better dev strict F1 or acc@1 (0: never early)",
    )
    t.add_argument(
        "--seed", type=int, default=13, help="weights of the new head, order, pairs, dropout"
    )
    t.add_argument(
        "--lr",
        type=float,
        default=None,
        help="peak AdamW learning rate (default: 1e-4 for encoders under 768 wide, 5e-5 "
        f"for BERT-base and wider; linking: {LINK.lr:g})",
    )
    t.add_argument(
        "--batch-pairs",
        type=int,
        default=LINK.batch_pairs,
        help="linking: pairs of strings per optimizer step, all workers; the other "
        "concepts' strings of a step are its negatives, so more pairs give more negatives "
        "and fewer steps an epoch",
    )
    t.add_argument(
        "--batch-tokens",
        type=int,
        default=4096,
        help="ner: padded tokens per optimizer step, all workers (windows of like length are "
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
        "position limit, at most 512 for BERT-style models); longer windows cost more per "
        f"token. Linking: tokens per training name or mention (default {LINK.max_length}; "
        "longer ones are cut; dev scoring reads the whole name, as the job does)",
    )
    t.add_argument(
        "--stride",
        type=int,
        default=128,
        help="ner: overlap between consecutive windows, as in the annotate job (at most half "
        "a window); overlap makes long documents cost more",
    )
    t.add_argument(
        "--random-crops",
        type=int,
        default=1,
        help="ner: extra training windows per document, of random length and offset, so "
        "that annotating with short windows (--max-length) keeps its accuracy; 0 = none",
    )
    t.add_argument(
        "--dev-batch-tokens", type=int, default=16384, help="ner: token budget per dev forward pass"
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


def _start_ray(num_workers: int, cpus: int) -> None:
    import ray

    if os.environ.get("RAY_ADDRESS"):
        ray.init()  # under `ray job submit`: join that cluster
    else:
        # A private local instance sized to the workers, never another user's cluster.
        ray.init(
            address="local",
            num_cpus=num_workers * cpus,
            include_dashboard=False,
            object_store_memory=512 * 1024**2,
        )


def _check_task(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """The flags each task requires (argparse's ``required`` cannot depend on --task)."""
    if args.task == "ner":
        if args.dev_docs is None or args.dev_entities is None:
            parser.error("--task ner needs --dev-docs and --dev-entities")
        if args.dictionary is not None:
            parser.error("--dictionary is for --task linking")
        return
    if args.dictionary is None:
        parser.error("--task linking needs --dictionary")
    if (args.dev_docs is None) != (args.dev_entities is None):
        parser.error("dev mentions need both --dev-docs and --dev-entities")


def _run_linking(args: argparse.Namespace, sched: TrainScheduling) -> int:
    cfg = link.LinkFinetuneConfig(
        train_docs=args.train_docs,
        train_entities=args.train_entities,
        dictionary=args.dictionary,
        base_model=str(models.resolve_model_dir(args.base_model)),
        output_uri=args.output,
        dev_docs=args.dev_docs,
        dev_entities=args.dev_entities,
        epochs=args.epochs if args.epochs is not None else LINK.epochs,
        patience=args.patience,
        seed=args.seed,
        lr=args.lr if args.lr is not None else LINK.lr,
        batch_pairs=args.batch_pairs,
        max_length=args.max_length if args.max_length is not None else LINK.max_length,
        warmup_ratio=args.warmup_ratio,
        weight_decay=args.weight_decay,
        bf16=args.bf16,
        attention_dropout=args.attention_dropout,
        trust_remote_code=args.trust_remote_code,
    )
    log.info("config: %s", json.dumps({"base_model_arg": args.base_model} | cfg.__dict__))
    try:
        prep = link.prepare(cfg, sched)  # every input checked before Ray starts
    except ValueError as exc:  # InputError included
        print(f"error: {exc}", file=sys.stderr)
        return 2
    _start_ray(sched.num_workers, sched.cpus_per_worker)
    summary = link.train(prep, cfg, sched)
    keys = ("kept_epoch", "kept_because", "base_dev_acc1", "best_dev_acc1", "stop_reason")
    report = {k: summary[k] for k in keys}
    report["epochs"] = [
        {k: round(e[k], 4) for k in ("train_loss", "train_seconds", "dev_acc1") if k in e}
        for e in summary["epochs"]
    ]
    report |= {"output": args.output, "total_seconds": round(summary["total_seconds"], 1)}
    print(json.dumps(report, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _check_task(parser, args)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cpus = args.cpus_per_worker or max(1, min(8, (os.cpu_count() or 1) // args.num_workers))
    sched = TrainScheduling(args.num_workers, args.use_gpu, cpus, args.storage_path)
    if args.task == "linking":
        return _run_linking(args, sched)
    cfg = FinetuneConfig(
        train_docs=args.train_docs,
        train_entities=args.train_entities,
        dev_docs=args.dev_docs,
        dev_entities=args.dev_entities,
        base_model=str(models.resolve_model_dir(args.base_model)),
        output_uri=args.output,
        epochs=args.epochs if args.epochs is not None else NER_EPOCHS,
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
    log.info("config: %s", json.dumps({"base_model_arg": args.base_model} | cfg.__dict__))
    _start_ray(args.num_workers, cpus)
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
