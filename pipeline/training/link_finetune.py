"""Fine-tune an encoder for concept linking on Ray Train, SapBERT-style: names of one
concept pulled together, others pushed apart.

The driver reads the dictionary (``pipeline.linking.dictionary``), the training mentions
with their gold ``concept_id`` and surface text, tokenizes every string once and draws
each epoch's pairs (``pipeline.training.link_data``): one of two names per concept that
has two, one per mention with another string of its concept. The workers' loop is
``pipeline.training.link_loop``. The output is the encoder's Hugging Face folder (what
``--link-model`` loads with ``AutoModel``), the base model's pooling declaration (so
``default_pooling`` gives the pooling trained with) and ``training.json``. Lengths are in
tokens.
"""

from __future__ import annotations

import json
import resource
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.linking.dictionary import Dictionary, read_dictionary
from pipeline.models import loading as models
from pipeline.stages.tokenize import special_tokens
from pipeline.training.data import seeded
from pipeline.training.finetune import TrainScheduling, fit, publish
from pipeline.training.link_data import (
    PairSource,
    form_codes,
    pair_batches,
    read_mentions,
)
from pipeline.training.link_loop import (
    SCORE_KEY,
    LinkDev,
    LinkLoop,
    MultiSimilarity,
    TokenRows,
    link_worker,
)
from pipeline.types import InputError

# sentence-transformers' files that declare how a folder's vectors are made
ST_FILES = ("modules.json", "sentence_bert_config.json", "config_sentence_transformers.json")


@dataclass(frozen=True)
class LinkFinetuneConfig:
    """What is trained. ``base_model`` is a local folder (already resolved)."""

    train_docs: str
    train_entities: str
    dictionary: str
    base_model: str
    output_uri: str
    dev_docs: str | None = None  # with dev_entities: acc@1 each epoch, the best kept
    dev_entities: str | None = None
    epochs: int = 3
    patience: int = 2  # with dev: epochs without a better acc@1 that end training
    seed: int = 13
    lr: float = 5e-5
    batch_pairs: int = 128  # pairs per optimizer step over all workers: 256 strings
    max_length: int = 32  # tokens of a training string at most, special tokens included
    chunk_tokens: int = 512  # padded tokens per forward pass within a step
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    bf16: str = "auto"  # autocast to bfloat16: "auto" (on GPUs), "on", "off"
    attention_dropout: float = 0.0
    trust_remote_code: bool = False


@dataclass(frozen=True)
class LinkPrepared:
    """The driver's work before training: the workers' loop and the data's counts."""

    loop: LinkLoop
    counts: dict[str, Any]
    seconds: float  # spent preparing


def _check(cfg: LinkFinetuneConfig, sched: TrainScheduling) -> None:
    if sched.num_workers < 1:
        raise ValueError("training needs at least one Ray Train worker")
    if cfg.epochs < 1 or cfg.patience < 0:
        raise ValueError(f"--epochs must be 1 or more and --patience 0 or more ({cfg})")
    if (cfg.dev_docs is None) != (cfg.dev_entities is None):
        raise ValueError("dev mentions need both --dev-docs and --dev-entities")
    if cfg.batch_pairs < max(2, sched.num_workers):
        raise ValueError(f"--batch-pairs {cfg.batch_pairs} must be at least 2 and one per worker")
    if cfg.bf16 not in ("auto", "on", "off"):
        raise ValueError(f"--bf16 must be auto, on or off, got {cfg.bf16!r}")
    if not 0.0 <= cfg.attention_dropout < 1.0:
        raise ValueError(f"--attention-dropout must be in [0, 1), got {cfg.attention_dropout}")


def pooling_files(base: Path, pooling: str, width: int) -> dict[str, bytes]:
    """The files that make ``default_pooling`` of the output folder give ``pooling``:
    the base folder's sentence-transformers declaration where it has one (modules.json,
    its configs and module folders), else a declaration of ``pooling`` alone (a SapBERT
    base is ``cls`` by its name, which the output folder does not carry)."""
    if models.declared_pooling(base):
        out = {f: (base / f).read_bytes() for f in ST_FILES if (base / f).is_file()}
        dirs = ["1_Pooling"]
        if (base / "modules.json").is_file():
            dirs += [m.get("path", "") for m in json.loads((base / "modules.json").read_text())]
        for d in {d for d in dirs if d}:
            for p in sorted((base / d).rglob("*")) if (base / d).is_dir() else []:
                if p.is_file():
                    out[str(p.relative_to(base))] = p.read_bytes()
        return out
    st = "sentence_transformers.models."
    modules = [
        {"idx": i, "name": str(i), "path": path, "type": st + kind}
        for i, (path, kind) in enumerate((("", "Transformer"), ("1_Pooling", "Pooling")))
    ]
    flags = {
        f"pooling_mode_{k}": pooling == v
        for k, v in (("cls_token", "cls"), ("mean_tokens", "mean"))
    }
    config = {"word_embedding_dimension": width} | flags
    return {
        "modules.json": json.dumps(modules, indent=2).encode(),
        "1_Pooling/config.json": json.dumps(config, indent=2).encode(),
    }


class _Strings:
    """Unique strings, in order of first use, and their index."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    def add(self, strings: list[str]) -> np.ndarray:
        return np.asarray([self.index.setdefault(s, len(self.index)) for s in strings], np.int64)

    @property
    def values(self) -> list[str]:
        return list(self.index)


def _names_by_concept(
    dictionary: Dictionary, name_strings: np.ndarray, forms: np.ndarray, codes: dict[str, int]
) -> list[np.ndarray]:
    """Per concept code: its names' strings, the first of each normalized form."""
    seen: list[dict[int, int]] = [{} for _ in codes]
    for cid, s in zip(dictionary.concept_ids, name_strings.tolist()):
        seen[codes[cid]].setdefault(int(forms[s]), s)
    return [np.asarray(list(d.values()), np.int64) for d in seen]


def prepare(cfg: LinkFinetuneConfig, sched: TrainScheduling) -> LinkPrepared:
    """Read and check every input, tokenize its strings and draw every epoch's pairs;
    raises ``InputError`` naming the file and column of a bad input."""
    t0 = time.perf_counter()
    _check(cfg, sched)
    dictionary = read_dictionary(cfg.dictionary)
    train = read_mentions(cfg.train_docs, cfg.train_entities)
    dev = read_mentions(cfg.dev_docs, cfg.dev_entities) if cfg.dev_docs else None
    if not train.surfaces:
        raise InputError(
            f"entities {cfg.train_entities}: no mention with a single concept_id to train on "
            f"({train.counts()})"
        )
    base = Path(cfg.base_model)
    tokenizer = models.load_tokenizer(base, cfg.trust_remote_code)
    model_config = models.read_config(base)
    pooling = models.default_pooling(base, cfg.base_model)
    special = special_tokens(tokenizer)
    if cfg.max_length <= len(special[0]) + len(special[1]):
        raise ValueError(f"--max-length {cfg.max_length} leaves no room beside special tokens")
    strings = _Strings()
    name_strings = strings.add(dictionary.names)
    mention_strings = strings.add(train.surfaces)
    dev_strings = strings.add(dev.surfaces) if dev else None
    values = strings.values
    encoded = (
        models.TokenizerDef.of(tokenizer).build().encode_batch(values, add_special_tokens=False)
    )
    tokens = TokenRows.of([e.ids for e in encoded])
    all_ids = [*dictionary.concept_ids, *train.concept_ids, *(dev.concept_ids if dev else [])]
    codes = {c: i for i, c in enumerate(sorted(set(all_ids)))}
    forms = form_codes(values)
    source = PairSource.build(
        _names_by_concept(dictionary, name_strings, forms, codes),
        mention_strings,
        np.asarray([codes[c] for c in train.concept_ids], np.int64),
        forms,
    )
    plan = [source.epoch_pairs(seeded(cfg.seed, 11, e)) for e in range(1, cfg.epochs + 1)]
    if not plan or len(plan[0]) < max(2, sched.num_workers):
        raise InputError(
            f"{len(plan[0]) if plan else 0} training pairs: too few to train on (a concept "
            "needs two names, a mention another string of its concept)"
        )
    batches = [pair_batches(len(p), cfg.batch_pairs, max(2, sched.num_workers)) for p in plan]
    link_dev = None
    if dev is not None:
        link_dev = LinkDev(
            names=name_strings,
            name_concepts=np.asarray([codes[c] for c in dictionary.concept_ids], np.int64),
            queries=dev_strings,
            gold=np.asarray([codes[c] for c in dev.concept_ids], np.int64),
        )
    in_dictionary = set(dictionary.concept_ids)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    loop = LinkLoop(
        base_model=str(base), pooling=pooling, tokens=tokens, special=special, pad_id=pad,
        plan=plan, batches=batches,
        folder_files=pooling_files(base, pooling, models.hidden_size(model_config) or 0),
        max_length=cfg.max_length, eval_max_length=models.default_max_length(model_config),
        chunk_tokens=cfg.chunk_tokens, epochs=cfg.epochs, patience=cfg.patience,
        seed=cfg.seed, lr=cfg.lr, warmup_ratio=cfg.warmup_ratio,
        weight_decay=cfg.weight_decay, threads=sched.cpus_per_worker,
        loss=MultiSimilarity(), dev=link_dev,
        bf16=cfg.bf16 == "on" or (cfg.bf16 == "auto" and sched.use_gpu),
        attention_dropout=cfg.attention_dropout, trust_remote_code=cfg.trust_remote_code,
    )  # fmt: skip
    lengths = np.diff(tokens.offsets)
    counts = {
        "dictionary": dictionary.report.to_dict(),
        "concepts_with_two_names": source.paired_concepts,
        "train_mentions": train.counts(),
        "train_mentions_concept_in_dictionary": sum(c in in_dictionary for c in train.concept_ids),
        "train_mentions_without_positive": len(train.surfaces) - source.paired_mentions,
        "pairs_per_epoch": len(plan[0]),
        "steps_per_epoch": len(batches[0]),
        "strings": len(values),
        "strings_truncated": int(
            (lengths > cfg.max_length - len(special[0]) - len(special[1])).sum()
        ),
    }
    if dev is not None:
        counts["dev_mentions"] = dev.counts()
        counts["dev_mentions_concept_in_dictionary"] = sum(
            c in in_dictionary for c in dev.concept_ids
        )
    return LinkPrepared(loop, counts, time.perf_counter() - t0)


def train(prep: LinkPrepared, cfg: LinkFinetuneConfig, sched: TrainScheduling) -> dict[str, Any]:
    """Train on Ray Train (initialised by the caller, or Ray's auto-init), write the kept
    epoch's folder and ``training.json`` to ``cfg.output_uri``; return the summary."""
    t_fit = time.perf_counter()
    storage_path = sched.storage_path or tempfile.mkdtemp(prefix="finetune-ray-")
    result = fit(prep.loop, sched, storage_path, link_worker, "finetune-linking")
    fit_seconds = time.perf_counter() - t_fit
    out = result.return_value or {}
    history = out.get("history", [])
    if prep.loop.dev is not None:
        best = max(history, key=lambda h: (h[SCORE_KEY], -h["epoch"])) if history else None
    else:
        best = history[-1] if history else None
    if result.checkpoint is None or best is None or result.metrics["epoch"] != best["epoch"]:
        raise RuntimeError("training ended without the kept epoch's checkpoint")
    loop = prep.loop
    summary = {
        "task": "linking",
        "config": asdict(cfg),
        "scheduling": asdict(sched),
        "counts": prep.counts,
        "pooling": loop.pooling,
        "max_length": loop.max_length,
        "max_length_note": "training strings are cut to max_length tokens (special tokens "
        "included) for speed; dev scoring reads up to eval_max_length, as the job does",
        "eval_max_length": loop.eval_max_length,
        "loss": {"name": "multi_similarity"} | asdict(loop.loss),
        "batch_pairs": cfg.batch_pairs,
        "lr": loop.lr,
        "bf16": loop.bf16,
        "epochs": history,
        "stopped": out.get("stopped"),
        "stop_reason": out.get("stop_reason"),
        "kept_epoch": best["epoch"],
        "kept_because": "best dev acc@1" if loop.dev is not None else "last epoch (no dev)",
        "base_dev_acc1": out.get("base_dev_acc1"),
        "best_dev_acc1": best.get(SCORE_KEY),
        "prepare_seconds": prep.seconds,
        "fit_seconds": fit_seconds,
        "peak_rss_mib": {
            "driver": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "worker_rank0": out.get("peak_rss_mib"),
        },
        "base_model_sha256": models.weights_hash(Path(cfg.base_model)),
    }
    publish(result.checkpoint, cfg.output_uri, summary, t_fit - prep.seconds)
    if sched.storage_path is None:
        shutil.rmtree(storage_path, ignore_errors=True)
    return summary


def run_link_finetune(cfg: LinkFinetuneConfig, sched: TrainScheduling) -> dict[str, Any]:
    """Prepare, then train; see ``train``."""
    return train(prepare(cfg, sched), cfg, sched)
