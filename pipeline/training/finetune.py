"""Fine-tune a token classifier on Ray Train, on the annotate job's tokenization and windows.

The driver reads the tables, tokenizes every document with the job's ``Tokenize`` stage,
labels tokens from gold character spans (``pipeline.training.alignment``) and cuts the same
windows as the job (``WindowPlan``). Every window token keeps its whole-document label,
so a span continuing from the previous window starts with ``I-``; only special tokens
and padding are left out of the loss. Each epoch rank 0 writes the weights and scores
the dev set through the job's own ``NerStage`` (window owners, ``first`` aggregation)
and ``score_spans``; a checkpoint is reported only when dev strict F1 improves, so the
last one Ray keeps is the best. Lengths are in tokens; offsets in characters.
"""

from __future__ import annotations

import logging
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.config import EncoderScheduling, NerSettings
from pipeline.core.windows import WindowPlan
from pipeline.evaluation.scoring import score_spans
from pipeline.models import loading as models
from pipeline.stages.ner import NerStage
from pipeline.stages.read import ReadSettings, document_columns
from pipeline.stages.tokenize import Tokenize, column_arrays, special_tokens
from pipeline.stages.write import entity_rows
from pipeline.storage import files as storage
from pipeline.training.alignment import (
    IGNORE,
    AlignmentReport,
    align_spans,
    bio_labels,
    window_labels,
)

log = logging.getLogger(__name__)

ROLE = "ner"
TRAINING_JSON = "training.json"
SCORE_KEY = "dev_strict_f1"


@dataclass(frozen=True)
class FinetuneConfig:
    """What is trained. ``base_model`` is a local folder (already resolved)."""

    train_docs: str
    train_entities: str
    dev_docs: str
    dev_entities: str
    base_model: str
    output_uri: str
    epochs: int = 3
    seed: int = 13
    lr: float = 5e-5
    batch_size: int = 16  # windows per optimizer step, over all workers
    max_length: int | None = None  # tokens per window incl. specials; None = model config
    stride: int = 128  # window overlap, tokens (clamped to half a window)
    random_crops: int = 1  # extra windows per document, random length and offset
    warmup_ratio: float = 0.1  # of all optimizer steps
    weight_decay: float = 0.01
    max_train_docs: int | None = None  # seeded subsample of training documents
    max_dev_docs: int | None = None  # seeded subsample of dev documents
    dev_batch_tokens: int = 16384  # token budget per dev forward pass
    trust_remote_code: bool = False


@dataclass(frozen=True)
class TrainScheduling:
    """How training is spread; never changes what one worker computes per window."""

    num_workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: int = 1  # also torch's intra-op threads per worker
    storage_path: str | None = None  # Ray Train run storage; shared (s3://) on multi-node


def read_split(
    docs_uri: str, entities_uri: str, max_docs: int | None, seed: int
) -> tuple[pa.Table, pa.Table, int]:
    """Docs (doc_id, text), their gold spans (doc_id, start, end, label) and the number of
    spans whose document is missing; optionally a seeded subsample of ``max_docs``
    documents (kept in input order)."""
    docs = storage.read_parquet_table(docs_uri, [S.DOC_ID, S.TEXT])
    ents = storage.read_parquet_table(entities_uri, [S.DOC_ID, S.START, S.END, S.LABEL])
    docs = docs.cast(pa.schema([(S.DOC_ID, pa.string()), (S.TEXT, pa.string())]))
    i = ents.schema.get_field_index(S.DOC_ID)
    ents = ents.set_column(i, S.DOC_ID, pc.cast(ents[S.DOC_ID], pa.string()))
    has_doc = ents.filter(pc.is_in(ents[S.DOC_ID], value_set=docs[S.DOC_ID]))
    if max_docs is not None and max_docs < docs.num_rows:
        pick = np.sort(np.random.default_rng(seed).choice(docs.num_rows, max_docs, replace=False))
        docs = docs.take(pa.array(pick))
    kept = has_doc.filter(pc.is_in(has_doc[S.DOC_ID], value_set=docs[S.DOC_ID]))
    return docs, kept, ents.num_rows - has_doc.num_rows


def tokenize_docs(docs: pa.Table, model_dir: str, trust_remote_code: bool) -> pa.Table:
    """The job's document columns and token columns for ``docs``, in one batch."""
    settings = ReadSettings(S.DOC_ID, S.TEXT, max_chars=1_000_000, docs_per_batch=docs.num_rows)
    batch = document_columns(docs, "train", settings)
    return Tokenize.of_model(ROLE, model_dir, trust_remote_code)(batch)


def doc_labels(
    batch: pa.Table, entities: pa.Table, label2id: dict[str, int]
) -> tuple[list[np.ndarray], AlignmentReport]:
    """Per document of a tokenized batch, each token's BIO label id; and the span report."""
    col = lambda name: column_arrays(batch, S.tokens_column(ROLE, name))  # noqa: E731
    starts, ends, words = col(S.TOKEN_STARTS), col(S.TOKEN_ENDS), col(S.WORD_IDS)
    by_doc = entities.to_pandas().groupby(S.DOC_ID, sort=False)
    groups = {str(k): g for k, g in by_doc}
    report = AlignmentReport()
    labels = []
    for d, doc_id in enumerate(batch.column(S.DOC_ID).to_pylist()):
        g = groups.get(doc_id)
        s, e, t = ([], [], []) if g is None else (g[S.START], g[S.END], g[S.LABEL].astype(str))
        lab, rep = align_spans(starts[d], ends[d], words[d], list(s), list(e), list(t), label2id)
        labels.append(lab)
        report.add(rep)
    return labels, report


def build_windows(
    batch: pa.Table,
    labels: list[np.ndarray],
    window: int,
    stride: int,
    prefix: list[int],
    suffix: list[int],
    crops: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Input ids and label ids of every window, laid out as the job feeds them, then
    ``crops`` random windows per document (see ``random_crops``)."""
    ids = column_arrays(batch, S.tokens_column(ROLE, S.TOKEN_IDS))
    lengths = [len(x) for x in ids]
    plan = WindowPlan.build(lengths, window, stride)
    extra = random_crops(lengths, window, crops, rng or _rng(0))
    pre, suf = np.asarray(prefix, np.int64), np.asarray(suffix, np.int64)
    x, y = [], []
    for d, s, n in zip(
        plan.doc.tolist() + extra[0],
        plan.start.tolist() + extra[1],
        plan.length.tolist() + extra[2],
    ):
        x.append(np.concatenate([pre, ids[d][s : s + n].astype(np.int64), suf]))
        y.append(window_labels(labels[d], s, n, len(prefix), len(suffix)))
    return x, y


def random_crops(
    lengths: list[int], window: int, crops: int, rng: np.random.Generator
) -> tuple[list[int], list[int], list[int]]:
    """Document, start and length of ``crops`` extra windows per document, each of a
    random length between 8 tokens and half of min(document, window), at a random
    offset. The job's windows nearly all begin where a document begins, so without
    these the model learns that a window's first tokens are a title's; annotating with
    short windows (``--max-length 64``) then costs precision."""
    doc: list[int] = []
    start: list[int] = []
    length: list[int] = []
    for d, n in enumerate(lengths):
        hi = min(n, window) // 2
        if hi < 1:
            continue
        for _ in range(crops):
            k = int(rng.integers(min(8, hi), hi + 1))
            doc.append(d)
            start.append(int(rng.integers(0, n - k + 1)))
            length.append(k)
    return doc, start, length


def epoch_batches(
    lengths: np.ndarray, batch_size: int, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Window indices of each step: shuffled, then sorted by length within blocks of 32
    batches so a batch pads little; a batch under ``min_size`` (one window per worker)
    joins the one before it. The number of batches does not depend on ``rng``."""
    perm = rng.permutation(len(lengths))
    batches: list[np.ndarray] = []
    block = batch_size * 32
    for c in range(0, len(perm), block):
        part = perm[c : c + block]
        part = part[np.argsort(-lengths[part], kind="stable")]
        for i in range(0, len(part), batch_size):
            b = part[i : i + batch_size]
            if len(b) < min_size and batches:
                batches[-1] = np.concatenate([batches[-1], b])
            else:
                batches.append(b)
    return [batches[i] for i in rng.permutation(len(batches))]


def score_dev(model_dir: str, dev: pa.Table, gold: pa.Table, cfg: dict[str, Any]) -> dict:
    """Strict and lenient micro scores of the model in ``model_dir`` on the tokenized dev
    batch, decoded exactly as the annotate job decodes (NerStage, ``first`` aggregation)."""
    settings = NerSettings(
        model_dir,
        cfg["max_length"],
        cfg["stride"],
        "auto",
        trust_remote_code=cfg["trust_remote_code"],
        aggregation="first",
    )
    stage = NerStage(settings, EncoderScheduling(cfg["bt"], threads=cfg["threads"]))
    pred = pa.concat_tables(
        [entity_rows(stage(dev.slice(i, 64))) for i in range(0, max(dev.num_rows, 1), 64)]
    )
    return score_spans(gold, pred, dev.column(S.DOC_ID).to_pylist()).to_dict()


def _pad(rows: list[np.ndarray], value: int) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def train_worker(cfg: dict[str, Any]) -> dict[str, Any] | None:
    """The Ray Train loop of one worker; rank 0 returns the per-epoch history."""
    import ray.train
    import ray.train.torch
    import torch
    from transformers import AutoModelForTokenClassification, get_linear_schedule_with_warmup

    # Ray forwards a worker's stderr to the driver; its loggers start unconfigured.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    torch.set_num_threads(cfg["threads"])
    torch.manual_seed(cfg["seed"])
    torch.use_deterministic_algorithms(True, warn_only=True)
    id2label = dict(enumerate(cfg["labels"]))
    model = AutoModelForTokenClassification.from_pretrained(
        cfg["base_model"],
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
        local_files_only=True,
        trust_remote_code=cfg["trust_remote_code"],
    )
    tokenizer = models.load_tokenizer(Path(cfg["base_model"]), cfg["trust_remote_code"])
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    bare = model.module if hasattr(model, "module") else model
    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
    groups = [
        {"params": [p for n, p in model.named_parameters() if not n.endswith(no_decay)]},
        {"params": [p for n, p in model.named_parameters() if n.endswith(no_decay)]},
    ]
    groups[0]["weight_decay"], groups[1]["weight_decay"] = cfg["weight_decay"], 0.0
    optimizer = torch.optim.AdamW(groups, lr=cfg["lr"])
    x, y = cfg["windows"]
    lengths = np.asarray([len(r) for r in x])
    n_steps = cfg["epochs"] * len(epoch_batches(lengths, cfg["batch_size"], world, _rng(0)))
    scheduler = get_linear_schedule_with_warmup(
        optimizer, round(cfg["warmup_ratio"] * n_steps), n_steps
    )
    history: list[dict[str, Any]] = []
    best = -1.0
    for epoch in range(1, cfg["epochs"] + 1):
        t0, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        model.train()
        batches = epoch_batches(lengths, cfg["batch_size"], world, _rng(cfg["seed"], epoch))
        every = max(1, len(batches) // 10)  # about ten progress lines an epoch
        for step, batch in enumerate(batches, 1):
            mine = batch[rank::world].tolist()
            ids = torch.from_numpy(_pad([x[i] for i in mine], cfg["pad_id"])).to(device)
            labels = torch.from_numpy(_pad([y[i] for i in mine], IGNORE)).to(device)
            mask = torch.from_numpy(_pad([np.ones(len(x[i])) for i in mine], 0)).to(device)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            loss_sum, n_batches = loss_sum + float(loss.detach()), n_batches + 1
            if rank == 0 and (step % every == 0 or step == len(batches)):
                log.info(
                    "epoch %d/%d: step %d/%d, mean loss %.4f, %.0f s",
                    epoch, cfg["epochs"], step, len(batches), loss_sum / n_batches,
                    time.perf_counter() - t0,
                )  # fmt: skip
        metrics = {"epoch": epoch, "train_loss": loss_sum / max(n_batches, 1)}
        metrics["train_seconds"] = time.perf_counter() - t0
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                bare.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                t1 = time.perf_counter()
                dev = score_dev(tmp, cfg["dev"], cfg["gold"], cfg)
                metrics |= {
                    SCORE_KEY: dev["strict"]["micro"]["f1"],
                    "dev_lenient_f1": dev["lenient"]["micro"]["f1"],
                    "dev_strict": dev["strict"]["micro"],
                    "dev_seconds": time.perf_counter() - t1,
                    "worker_cpu_seconds": _cpu_seconds(),  # cumulative; independent of load
                }
                history.append(dict(metrics))
                log.info(
                    "epoch %d: dev strict F1 %.4f, lenient F1 %.4f (scored in %.0f s)",
                    epoch, metrics[SCORE_KEY], metrics["dev_lenient_f1"], metrics["dev_seconds"],
                )  # fmt: skip
                if metrics[SCORE_KEY] > best:  # ties keep the earlier epoch
                    best = metrics[SCORE_KEY]
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{epoch}")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    return {"history": history, "peak_rss_mib": peak} if rank == 0 else None


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime


def _rng(*seed: int) -> np.random.Generator:
    return np.random.default_rng(list(seed))


def run_finetune(cfg: FinetuneConfig, sched: TrainScheduling) -> dict[str, Any]:
    """Prepare, train on Ray Train (Ray must be initialised, or Ray's auto-init starts a
    local instance), write the best epoch's HF model folder and ``training.json`` to
    ``cfg.output_uri``; return the summary that ``training.json`` holds."""
    from ray.train import CheckpointConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    if sched.num_workers < 1:
        raise ValueError("training needs at least one Ray Train worker")
    if cfg.random_crops < 0:
        raise ValueError(f"--random-crops must be 0 or more, got {cfg.random_crops}")
    t_start = time.perf_counter()
    base = Path(cfg.base_model)
    tokenizer = models.load_tokenizer(base, cfg.trust_remote_code)
    max_length = cfg.max_length or models.default_max_length(models.read_config(base))
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
    types = sorted(set(pc.unique(train_ents[S.LABEL]).to_pylist()))
    if not types:
        raise ValueError("the training entities hold no labels")
    labels = bio_labels(types)
    label2id = {v: k for k, v in enumerate(labels)}
    train_batch = tokenize_docs(train_docs, str(base), cfg.trust_remote_code)
    dev_batch = tokenize_docs(dev_docs, str(base), cfg.trust_remote_code)
    train_labels, train_report = doc_labels(train_batch, train_ents, label2id)
    _, dev_report = doc_labels(dev_batch, dev_ents, label2id)
    for report, orphans in ((train_report, train_orphans), (dev_report, dev_orphans)):
        report.n_spans += orphans
        report.no_document += orphans
    x, y = build_windows(
        train_batch,
        train_labels,
        window,
        cfg.stride,
        prefix,
        suffix,
        cfg.random_crops,
        _rng(cfg.seed, 7),
    )
    if len(x) < sched.num_workers:
        raise ValueError(f"{len(x)} training windows cannot feed {sched.num_workers} workers")
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    loop_cfg = asdict(cfg) | {
        "labels": labels,
        "max_length": max_length,
        "bt": cfg.dev_batch_tokens,
        "threads": sched.cpus_per_worker,
        "pad_id": pad,
        "windows": (x, y),
        "dev": dev_batch,
        "gold": dev_ents,
    }
    storage_path = sched.storage_path or tempfile.mkdtemp(prefix="finetune-ray-")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config=loop_cfg,
        scaling_config=ScalingConfig(
            num_workers=sched.num_workers,
            use_gpu=sched.use_gpu,
            resources_per_worker={"CPU": sched.cpus_per_worker},  # use_gpu adds 1 GPU each
        ),
        run_config=RunConfig(
            name=f"finetune-{int(time.time())}",
            storage_path=storage_path,
            checkpoint_config=CheckpointConfig(num_to_keep=1),
        ),
    )
    t_fit = time.perf_counter()
    result = trainer.fit()
    fit_seconds = time.perf_counter() - t_fit
    out = result.return_value or {}
    history = out.get("history", [])
    best = max(history, key=lambda h: (h[SCORE_KEY], -h["epoch"])) if history else None
    if result.checkpoint is None or best is None or result.metrics["epoch"] != best["epoch"]:
        raise RuntimeError("training ended without the best epoch's checkpoint")
    summary = {
        "config": asdict(cfg),
        "scheduling": asdict(sched),
        "labels": labels,
        "max_length": max_length,
        "window_tokens": window,
        "counts": {
            "train_docs": train_docs.num_rows,
            "train_windows": len(x),
            "train_tokens": int(sum(len(r) for r in x)),
            "dev_docs": dev_docs.num_rows,
        },
        "alignment": {"train": train_report.to_dict(), "dev": dev_report.to_dict()},
        "epochs": history,
        "best_epoch": best["epoch"],
        "best_dev_strict_f1": best[SCORE_KEY],
        "best_dev_lenient_f1": best["dev_lenient_f1"],
        "fit_seconds": fit_seconds,
        "peak_rss_mib": {
            "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rank0": out.get("peak_rss_mib"),
        },
        "base_model_sha256": models.weights_hash(base),
    }
    with result.checkpoint.as_directory() as ckpt:
        storage.upload_folder(ckpt, cfg.output_uri)
    summary["total_seconds"] = time.perf_counter() - t_start
    # Written last: a folder with training.json holds a complete model.
    storage.write_json(storage.join(cfg.output_uri, TRAINING_JSON), summary)
    if sched.storage_path is None:
        shutil.rmtree(storage_path, ignore_errors=True)
    return summary
