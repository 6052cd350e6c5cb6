"""The Ray Train loop of one worker: load the base model with the run's labels, train on
the prepared windows, and on rank 0 score the dev set each epoch through the annotate
job's own ``NerStage`` (window owners, ``first`` aggregation, the job's default decoding),
reporting a checkpoint only when dev strict F1 improves, so the last one Ray keeps is the
best; training stops early when it has not improved for ``patience`` epochs."""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.config import EncoderScheduling, NerSettings
from pipeline.evaluation.scoring import score_spans
from pipeline.models import loading as models
from pipeline.stages.ner import NerStage
from pipeline.stages.write import entity_rows
from pipeline.training.alignment import IGNORE
from pipeline.training.data import epoch_batches, seeded
from pipeline.training.stopping import EarlyStopping

if TYPE_CHECKING:  # the driver imports this module; torch loads in the workers
    import torch

log = logging.getLogger(__name__)

SCORE_KEY = "dev_strict_f1"


@dataclass(frozen=True)
class TrainLoop:
    """Everything one worker needs, prepared by the driver. Lengths are in tokens."""

    base_model: str  # local folder
    labels: list[str]  # BIO labels, by id
    windows: tuple[list[np.ndarray], list[np.ndarray]]  # input ids and label ids per window
    dev: pa.Table  # tokenized dev documents
    gold: pa.Table  # their gold spans
    max_length: int  # tokens per window, special tokens included
    stride: int
    pad_id: int
    epochs: int  # at most
    patience: int  # epochs without a better dev score that end training (0: never)
    seed: int
    lr: float
    batch_tokens: int  # padded tokens per optimizer step, over all workers
    warmup_ratio: float
    weight_decay: float
    dev_batch_tokens: int
    threads: int  # torch intra-op threads per worker
    bf16: bool = False  # autocast the forward pass to bfloat16
    attention_dropout: float = 0.0  # dropout on attention probabilities
    trust_remote_code: bool = False


def score_dev(model_dir: str, loop: TrainLoop) -> dict:
    """Strict and lenient micro scores of the model in ``model_dir`` on the dev batch,
    decoded exactly as the annotate job decodes (NerStage, ``first`` aggregation)."""
    settings = NerSettings(
        model_dir,
        loop.max_length,
        loop.stride,
        "auto",
        trust_remote_code=loop.trust_remote_code,
        aggregation="first",
    )
    stage = NerStage(settings, EncoderScheduling(loop.dev_batch_tokens, threads=loop.threads))
    dev = loop.dev
    pred = pa.concat_tables(
        [entity_rows(stage(dev.slice(i, 64))) for i in range(0, max(dev.num_rows, 1), 64)]
    )
    return score_spans(loop.gold, pred, dev.column(S.DOC_ID).to_pylist()).to_dict()


def start_worker(threads: int, seed: int) -> tuple[int, int]:
    """A Ray Train worker's common start: logging, torch threads, seeded and deterministic
    kernels. Returns (rank, world size)."""
    import ray.train
    import torch

    # Ray forwards a worker's stderr to the driver; its loggers start unconfigured.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    ctx = ray.train.get_context()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)
    return ctx.get_world_rank(), ctx.get_world_size()


def train_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train's entry point (``train_loop_config={"loop": TrainLoop}``); rank 0
    returns the per-epoch history and its peak memory."""
    import ray.train
    import ray.train.torch

    loop: TrainLoop = config["loop"]
    rank, world = start_worker(loop.threads, loop.seed)
    model, tokenizer = _load(loop)
    model = ray.train.torch.prepare_model(model)
    trainer = _Steps(model, loop, rank, world, ray.train.torch.get_device())
    history: list[dict[str, Any]] = []
    stopping = EarlyStopping(loop.epochs, loop.patience)
    for epoch in range(1, loop.epochs + 1):
        metrics = trainer.epoch(epoch)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                bare = model.module if hasattr(model, "module") else model
                bare.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                metrics |= _dev_metrics(tmp, loop, epoch)
                history.append(dict(metrics))
                if stopping.update(epoch, metrics[SCORE_KEY]):
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{epoch}")
        if _agree(stopping.stopped, trainer.device):
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    if rank != 0:
        return None
    log.info("training stopped after epoch %d: %s", epoch, stopping.describe())
    return {
        "history": history,
        "peak_rss_mib": peak,
        "stopped": stopping.reason,
        "stop_reason": stopping.describe(),
    }


def _agree(stop: bool, device: Any) -> bool:
    """Rank 0's decision (only it scores dev), the same on every worker."""
    import torch
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_initialized() or dist.get_world_size() == 1:
        return stop
    flag = torch.tensor([int(stop)], device=device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def attention_dropout(base_model: str, trust_remote_code: bool, p: float) -> dict[str, float]:
    """The config overrides that set the model's attention-probability dropout to ``p``.
    Without that dropout, PyTorch's fused attention kernel serves training too: memory
    linear in the window instead of quadratic, and on 2 CPU cores 1.9x faster a step
    (docs/finetuning.md)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(
        base_model, local_files_only=True, trust_remote_code=trust_remote_code
    )
    keys = ("attention_probs_dropout_prob", "attention_dropout")
    return {k: p for k in keys if hasattr(config, k)}


def _load(loop: TrainLoop) -> tuple[torch.nn.Module, Any]:
    from transformers import AutoModelForTokenClassification

    id2label = dict(enumerate(loop.labels))
    dropout = attention_dropout(loop.base_model, loop.trust_remote_code, loop.attention_dropout)
    model = AutoModelForTokenClassification.from_pretrained(
        loop.base_model,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        ignore_mismatched_sizes=True,
        local_files_only=True,
        trust_remote_code=loop.trust_remote_code,
        **dropout,
    )
    return model, models.load_tokenizer(Path(loop.base_model), loop.trust_remote_code)


class _Steps:
    """The optimizer, its schedule and one epoch of steps over this worker's share."""

    def __init__(
        self, model: torch.nn.Module, loop: TrainLoop, rank: int, world: int, device: Any
    ) -> None:
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.model, self.loop, self.rank, self.world, self.device = (
            model, loop, rank, world, device,
        )  # fmt: skip
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        params = list(model.named_parameters())
        groups = [
            {"params": [p for n, p in params if not n.endswith(no_decay)]},
            {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        groups[0]["weight_decay"] = loop.weight_decay
        self.optimizer = torch.optim.AdamW(groups, lr=loop.lr)
        lengths = np.asarray([len(r) for r in loop.windows[0]])
        # Every epoch's steps, drawn up front: the schedule needs their number.
        self.plan = [
            epoch_batches(lengths, loop.batch_tokens, world, seeded(loop.seed, e))
            for e in range(1, loop.epochs + 1)
        ]
        n_steps = sum(len(b) for b in self.plan)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, round(loop.warmup_ratio * n_steps), n_steps
        )

    def epoch(self, epoch: int) -> dict[str, Any]:
        import torch

        loop, (x, y) = self.loop, self.loop.windows
        t0, loss_sum, n_batches = time.perf_counter(), 0.0, 0
        self.model.train()
        batches = self.plan[epoch - 1]
        every = max(1, len(batches) // 10)  # about ten progress lines an epoch
        for step, batch in enumerate(batches, 1):
            mine = batch[self.rank :: self.world].tolist()
            ids = torch.from_numpy(_pad([x[i] for i in mine], loop.pad_id)).to(self.device)
            labels = torch.from_numpy(_pad([y[i] for i in mine], IGNORE)).to(self.device)
            mask = torch.from_numpy(_pad([np.ones(len(x[i])) for i in mine], 0)).to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=loop.bf16):
                loss = self.model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum, n_batches = loss_sum + float(loss.detach()), n_batches + 1
            if self.rank == 0 and (step % every == 0 or step == len(batches)):
                log.info(
                    "epoch %d/%d: step %d/%d, mean loss %.4f, %.0f s",
                    epoch, loop.epochs, step, len(batches), loss_sum / n_batches,
                    time.perf_counter() - t0,
                )  # fmt: skip
        return {
            "epoch": epoch,
            "train_loss": loss_sum / max(n_batches, 1),
            "train_seconds": time.perf_counter() - t0,
        }


def _dev_metrics(model_dir: str, loop: TrainLoop, epoch: int) -> dict[str, Any]:
    t1 = time.perf_counter()
    dev = score_dev(model_dir, loop)
    metrics = {
        SCORE_KEY: dev["strict"]["micro"]["f1"],
        "dev_lenient_f1": dev["lenient"]["micro"]["f1"],
        "dev_strict": dev["strict"]["micro"],
        "dev_seconds": time.perf_counter() - t1,
        "worker_cpu_seconds": _cpu_seconds(),  # cumulative; independent of load
    }
    log.info(
        "epoch %d: dev strict F1 %.4f, lenient F1 %.4f (scored in %.0f s)",
        epoch, metrics[SCORE_KEY], metrics["dev_lenient_f1"], metrics["dev_seconds"],
    )  # fmt: skip
    return metrics


def _pad(rows: list[np.ndarray], value: int) -> np.ndarray:
    out = np.full((len(rows), max(len(r) for r in rows)), value, dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def _cpu_seconds() -> float:
    use = resource.getrusage(resource.RUSAGE_SELF)
    return use.ru_utime + use.ru_stime
