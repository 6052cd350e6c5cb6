"""The demo NER model: all-MiniLM-L6-v2 fine-tuned on the sample corpus, built once per cache.

It is quick rather than thorough: one epoch over a seeded subsample of the sample corpus's
train split, scored on part of the held-out split. Training runs on Ray Train: the caller
initialises Ray (the jobs do); otherwise Ray's auto-init starts a local instance on first
use, with every core of the machine.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.evaluation.context import score_context
from pipeline.evaluation.scoring import score_spans
from pipeline.sample import corpus as sample_corpus
from pipeline.sample import defaults
from pipeline.storage import files as storage
from pipeline.training.finetune import FinetuneConfig, TrainScheduling, run_finetune

DEMO_DIR = "demo-ner"
CORPUS_DIR = defaults.SAMPLE_CORPUS_DIR  # the sample corpus the default job annotates
MARKER = ".complete"
# A build takes about two minutes on 2 CPU cores (its training.json has the
# measured numbers).
# Windows use the annotate job's defaults for this model (512 tokens, stride 128), so the
# job decodes with the context the model was trained on; few windows, so small batches.
DEMO_SETTINGS = {
    "epochs": 1,
    "seed": 13,
    "lr": 2e-4,
    "batch_tokens": 1024,
    "max_train_docs": 48,
    "max_dev_docs": 8,
}


def _default_scheduling() -> TrainScheduling:
    import ray

    cores, gpus = os.cpu_count() or 1, 0.0
    if ray.is_initialized():
        resources = ray.cluster_resources()
        cores, gpus = int(resources.get("CPU", 1)), resources.get("GPU", 0.0)
    return TrainScheduling(1, use_gpu=gpus >= 1, cpus_per_worker=max(1, min(4, cores)))


def is_built(cache_dir: Path) -> bool:
    return (cache_dir / DEMO_DIR / MARKER).exists()


def ensure_demo_ner_model(cache_dir: Path, sched: TrainScheduling | None = None) -> Path:
    """``<cache_dir>/demo-ner``, fine-tuned now unless a finished one is there.

    Writes the sample corpus into ``<cache_dir>/sample-corpus`` first when it is missing.
    The model is trained in a private folder and renamed into place with its completion
    marker, so a concurrent or interrupted build never leaves a half-written model.
    """
    dest = cache_dir / DEMO_DIR
    if is_built(cache_dir):
        return dest
    corpus = cache_dir / CORPUS_DIR
    needed = [
        corpus / f"{s}_{k}.parquet" for s in ("train", "heldout") for k in ("docs", "entities")
    ]
    if not all(p.exists() for p in needed):
        sample_corpus.write_sample_corpus(str(corpus))
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEMO_DIR}-", dir=cache_dir))
    try:
        cfg = FinetuneConfig(
            train_docs=str(corpus / "train_docs.parquet"),
            train_entities=str(corpus / "train_entities.parquet"),
            dev_docs=str(corpus / "heldout_docs.parquet"),
            dev_entities=str(corpus / "heldout_entities.parquet"),
            base_model=defaults.default_embed_model(),
            output_uri=str(tmp),
            **DEMO_SETTINGS,
        )
        run_finetune(cfg, sched or _default_scheduling())
        storage.write_json(str(tmp / MARKER), {"base_model": cfg.base_model})
        if dest.exists() and not (dest / MARKER).exists():
            shutil.rmtree(dest)  # an unfinished folder left by an older build
        try:
            os.replace(tmp, dest)
        except OSError:  # another process finished first
            if not (dest / MARKER).exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest


def held_out_note(output_uri: str, cache_dir: Path) -> str:
    """What the summary says of the demo model: what it is, and its strict F1 on the
    sample's held-out documents as annotated by this run (not by training's dev check)."""
    corpus = cache_dir / CORPUS_DIR
    ids = storage.read_parquet_table(str(corpus / "heldout_docs.parquet"), [S.DOC_ID])
    gold = storage.read_parquet_table(str(corpus / "heldout_entities.parquet"))
    pred = storage.read_parquet_table(storage.join(output_uri, S.ENTITIES_DIR))
    report = score_spans(gold, pred, ids.column(S.DOC_ID).to_pylist())
    note = (
        "Entities come from a DEMO model: all-MiniLM-L6-v2 fine-tuned for a few minutes on "
        "the invented text of the sample corpus, not on real clinical or literature data; "
        f"do not use it on real notes. Strict F1 on the {report.n_docs} held-out sample "
        f"documents: {report.strict.micro.f1:.3f} (lenient {report.lenient.micro.f1:.3f})."
    )
    return note + _context_note(pred)


def _context_note(pred: pa.Table) -> str:
    """The context rules' accuracy on the held-out notes' gold context (the generator's
    tags), over the mentions the model found exactly. The gold comes from the generator
    itself: a corpus cached by an older version has no context columns."""
    docs, gold = sample_corpus.generate_corpus()
    notes = docs.filter(pc.and_(pc.equal(docs[sample_corpus.SPLIT], "heldout"),
                                pc.equal(docs[sample_corpus.SOURCE], "note")))  # fmt: skip
    gold = gold.filter(pc.is_in(gold[S.DOC_ID], value_set=notes[S.DOC_ID]))
    if S.NEGATION not in pred.column_names:
        return ""
    scores = score_context(gold.to_pandas(), pred.to_pandas())
    if not scores or not scores["n_matched"]:
        return ""
    acc = {a: v["accuracy"] for a, v in scores["axes"].items()}
    return (
        f"\nContext (rules, not the demo model) on {scores['n_matched']} held-out note "
        f"mentions found exactly: all three right {scores['all_axes_right']:.1%}; negation "
        f"{acc[S.NEGATION]:.1%}, temporality {acc[S.TEMPORALITY]:.1%}, experiencer "
        f"{acc[S.EXPERIENCER]:.1%}."
    )
