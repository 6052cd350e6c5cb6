"""The Ray Train loop of one linking worker: load the base encoder, train it on the
driver's pairs (each step: a batch of pairs, in-batch negatives, SapBERT's loss), and on
rank 0 write the epoch's model folder. With dev mentions, rank 0 scores acc@1 (the
concept of the nearest dictionary name) each epoch and reports a checkpoint only when it
improves, stopping after ``patience`` epochs without; without dev every epoch is
reported, so the last one is kept. Lengths are in tokens."""

from __future__ import annotations

import logging
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from pipeline.models import loading as models
from pipeline.training.link_data import top1_concepts
from pipeline.training.loop import _agree, _cpu_seconds, attention_dropout, start_worker
from pipeline.training.stopping import EarlyStopping

if TYPE_CHECKING:  # the driver imports this module; torch loads in the workers
    import torch

    from pipeline.training.name_encoder import NameEncoder

log = logging.getLogger(__name__)

SCORE_KEY = "dev_acc1"


@dataclass(frozen=True)
class MultiSimilarity:
    """SapBERT's loss (Liu et al. 2021; its code: ``MultiSimilarityLoss(alpha=1,
    beta=60, base=0.5)`` over the pairs an all-triplets ``TripletMarginMiner`` with margin
    0.2 finds), with cosine similarities; ``name_encoder.multi_similarity_loss``."""

    alpha: float = 1.0  # how sharply positives below ``base`` weigh
    beta: float = 60.0  # how sharply negatives above ``base`` weigh
    base: float = 0.5  # the similarity positives are pulled above, negatives pushed below
    margin: float = 0.2  # a pair counts when a triplet of it is within this margin


@dataclass(frozen=True)
class TokenRows:
    """Token ids of many strings (no special tokens), as one flat array and offsets."""

    flat: np.ndarray
    offsets: np.ndarray  # [n + 1]

    @classmethod
    def of(cls, rows: list[list[int]]) -> TokenRows:
        offsets = np.zeros(len(rows) + 1, np.int64)
        np.cumsum([len(r) for r in rows], out=offsets[1:])
        flat = np.fromiter((t for r in rows for t in r), np.int32, int(offsets[-1]))
        return cls(flat, offsets)

    def rows(self, index: np.ndarray) -> list[np.ndarray]:
        o = self.offsets
        return [self.flat[o[i] : o[i + 1]] for i in np.asarray(index).tolist()]


@dataclass(frozen=True)
class LinkDev:
    """Held-out mentions and the dictionary they are matched against, by string index."""

    names: np.ndarray  # each dictionary name's string
    name_concepts: np.ndarray  # its concept code
    queries: np.ndarray  # each dev mention's string
    gold: np.ndarray  # its gold concept code


@dataclass(frozen=True)
class LinkLoop:
    """Everything one worker needs, prepared by the driver. Lengths are in tokens."""

    base_model: str  # local folder
    pooling: str  # pipeline.stages.embed.pool's mode: what the link stage computes
    tokens: TokenRows  # every string's token ids
    special: tuple[list[int], list[int]]  # the tokenizer's ids before and after a string
    pad_id: int
    plan: list[np.ndarray]  # per epoch: [n_pairs, 3] anchor, positive, concept code
    batches: list[list[np.ndarray]]  # per epoch: each step's rows of the plan
    folder_files: dict[str, bytes]  # written next to the weights (pooling declaration)
    max_length: int  # a training string's tokens at most, special tokens included
    eval_max_length: int  # the same for dev scoring: the model's limit, as the job reads
    chunk_tokens: int  # padded tokens per forward pass
    epochs: int
    patience: int
    seed: int
    lr: float
    warmup_ratio: float
    weight_decay: float
    threads: int
    loss: MultiSimilarity
    dev: LinkDev | None = None
    bf16: bool = False
    attention_dropout: float = 0.0
    trust_remote_code: bool = False


def link_worker(config: dict[str, Any]) -> dict[str, Any] | None:
    """Ray Train's entry point (``train_loop_config={"loop": LinkLoop}``); rank 0
    returns the per-epoch history and its peak memory."""
    import ray.train
    import ray.train.torch

    loop: LinkLoop = config["loop"]
    rank, world = start_worker(loop.threads, loop.seed)
    encoder, tokenizer = _load(loop)
    model = ray.train.torch.prepare_model(encoder)
    device = ray.train.torch.get_device()
    steps = _Steps(model, loop, rank, world, device)
    dev = loop.dev is not None
    stopping = EarlyStopping(loop.epochs, loop.patience if dev else 0, metric="dev acc@1")
    history: list[dict[str, Any]] = []
    base_acc = dev_accuracy(encoder, loop, device)[SCORE_KEY] if dev and rank == 0 else None
    for epoch in range(1, loop.epochs + 1):
        metrics = steps.epoch(epoch)
        with tempfile.TemporaryDirectory() as tmp:
            checkpoint = None
            if rank == 0:
                encoder.model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                for rel, data in loop.folder_files.items():
                    (Path(tmp) / rel).parent.mkdir(parents=True, exist_ok=True)
                    (Path(tmp) / rel).write_bytes(data)
                metrics |= dev_accuracy(encoder, loop, device) if dev else {}
                metrics["worker_cpu_seconds"] = _cpu_seconds()
                history.append(dict(metrics))
                # without dev every epoch counts as better: the last one is kept
                if stopping.update(epoch, metrics[SCORE_KEY] if dev else float(epoch)):
                    checkpoint = ray.train.Checkpoint.from_directory(tmp)
            ray.train.report(metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{epoch}")
        if _agree(stopping.stopped, device):
            break
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB → MiB on Linux
    if rank != 0:
        return None
    log.info("training stopped after epoch %d: %s", epoch, stopping.describe())
    return {
        "history": history,
        "base_dev_acc1": base_acc,
        "peak_rss_mib": peak,
        "stopped": stopping.reason,
        "stop_reason": stopping.describe(),
    }


def _load(loop: LinkLoop) -> tuple[NameEncoder, Any]:
    from transformers import AutoModel

    from pipeline.training.name_encoder import NameEncoder

    dropout = attention_dropout(loop.base_model, loop.trust_remote_code, loop.attention_dropout)
    model = AutoModel.from_pretrained(
        loop.base_model,
        local_files_only=True,
        trust_remote_code=loop.trust_remote_code,
        **dropout,
    )
    # A pooler (BERT's) is off the path to the vectors: frozen, DDP waits for no gradient
    # of it, and the folder keeps it as it was.
    if getattr(model, "pooler", None) is not None:
        model.pooler.requires_grad_(False)
    tokenizer = models.load_tokenizer(Path(loop.base_model), loop.trust_remote_code)
    return NameEncoder(model, loop.pooling), tokenizer


def dev_accuracy(encoder: NameEncoder, loop: LinkLoop, device: Any) -> dict[str, Any]:
    """acc@1 of the dev mentions: the share whose nearest dictionary name (cosine of the
    vectors the link stage computes) belongs to their gold concept."""
    from pipeline.training.name_encoder import embed_rows, with_specials

    assert loop.dev is not None
    t0 = time.perf_counter()
    was_training = encoder.training
    encoder.eval()
    dev = loop.dev
    embed = lambda idx: embed_rows(  # noqa: E731
        encoder,
        with_specials(loop.tokens.rows(idx), loop.eval_max_length, loop.special),
        loop.chunk_tokens,
        loop.pad_id,
        device,
    )
    predicted = top1_concepts(embed(dev.queries), embed(dev.names), dev.name_concepts)
    encoder.train(was_training)
    acc = float(np.mean(predicted == dev.gold)) if len(dev.gold) else 0.0
    log.info("dev acc@1 %.4f over %d mentions", acc, len(dev.gold))
    return {SCORE_KEY: acc, "dev_seconds": time.perf_counter() - t0}


class _Steps:
    """The optimizer, its schedule and one epoch of steps over this worker's pairs."""

    def __init__(self, model: torch.nn.Module, loop: LinkLoop, rank: int, world: int, device):
        import torch
        from transformers import get_linear_schedule_with_warmup

        self.model, self.loop, self.rank, self.world, self.device = (
            model, loop, rank, world, device,
        )  # fmt: skip
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight", "norm.weight")
        params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        groups = [
            {"params": [p for n, p in params if not n.endswith(no_decay)]},
            {"params": [p for n, p in params if n.endswith(no_decay)], "weight_decay": 0.0},
        ]
        groups[0]["weight_decay"] = loop.weight_decay
        self.optimizer = torch.optim.AdamW(groups, lr=loop.lr)
        n_steps = sum(len(b) for b in loop.batches)
        self.scheduler = get_linear_schedule_with_warmup(
            self.optimizer, round(loop.warmup_ratio * n_steps), n_steps
        )

    def epoch(self, epoch: int) -> dict[str, Any]:
        import torch

        from pipeline.training.name_encoder import (
            chunk_tensors,
            multi_similarity_loss,
            with_specials,
        )

        loop = self.loop
        pairs, batches = loop.plan[epoch - 1], loop.batches[epoch - 1]
        t0, loss_sum, n_tokens = time.perf_counter(), 0.0, 0
        self.model.train()
        every = max(1, len(batches) // 10)  # about ten progress lines an epoch
        for step, batch in enumerate(batches, 1):
            mine = pairs[batch[self.rank :: self.world]]
            strings = np.concatenate([mine[:, 0], mine[:, 1]])
            concepts = np.concatenate([mine[:, 2], mine[:, 2]])
            rows = with_specials(loop.tokens.rows(strings), loop.max_length, loop.special)
            chunks, order = chunk_tensors(rows, loop.chunk_tokens, loop.pad_id, self.device)
            labels = torch.from_numpy(concepts[order]).to(self.device)
            with torch.autocast(self.device.type, torch.bfloat16, enabled=loop.bf16):
                vectors = self.model(chunks)
            loss = multi_similarity_loss(vectors.float(), labels, loop.loss)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.optimizer.step()
            self.scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
            loss_sum += float(loss.detach())
            n_tokens += sum(len(r) for r in rows)
            if self.rank == 0 and (step % every == 0 or step == len(batches)):
                log.info(
                    "epoch %d/%d: step %d/%d, mean loss %.4f, %.0f s",
                    epoch, loop.epochs, step, len(batches), loss_sum / step,
                    time.perf_counter() - t0,
                )  # fmt: skip
        return {
            "epoch": epoch,
            "train_loss": loss_sum / max(len(batches), 1),
            "steps": len(batches),
            "pairs": len(pairs),
            "worker_tokens": n_tokens,  # this worker's share, special tokens included
            "train_seconds": time.perf_counter() - t0,
        }
