"""The in-process contenders of the benchmark, each a function returning one row.

Rates are in window tokens (see ``pipeline.bench.harness``); model loading and a short
warm-up (``BenchSettings.warmup``) stay outside the timings.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from pipeline import schemas as S
from pipeline.bench.harness import (
    BenchSettings,
    Clock,
    Corpus,
    Entity,
    forward_flops,
    job_batch_tokens,
    peak_rss,
    row,
)
from pipeline.config import EmbedSettings, EncoderScheduling, EncoderSettings, NerSettings
from pipeline.models import loading as models
from pipeline.stages.encoder import pick_device
from pipeline.stages.tokenize import Tokenize

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def hf_pipeline_row(
    corpus: Corpus, ner_dir: str, s: BenchSettings, dtype: str = "float32"
) -> tuple[dict[str, Any], set[Entity]]:
    """transformers' token-classification pipeline, ``aggregation_strategy="first"``, with
    the job's stride, at the fastest of ``s.hf_batch_sizes`` (tried on a subset)."""
    from transformers import AutoTokenizer, pipeline

    tok = AutoTokenizer.from_pretrained(ner_dir, local_files_only=True)
    tok.model_max_length = s.max_length  # the pipeline's windows come from this
    pipe = pipeline(
        "token-classification",
        model=ner_dir,
        tokenizer=tok,
        aggregation_strategy="first",
        stride=s.stride,
        device=pick_device(),
        dtype=DTYPES[dtype],
    )
    texts = corpus.texts
    pipe(texts[: s.warmup(len(texts))], batch_size=max(s.hf_batch_sizes))
    subset = texts[: max(s.warmup_docs, min(len(texts), s.trial_docs))]
    trials = {}
    for b in s.hf_batch_sizes:
        trial = Clock()
        trial.run(lambda b=b: pipe(subset, batch_size=b))
        trials[b] = trial.wall_s
    best = min(trials, key=trials.get)
    clock = Clock()
    with peak_rss() as mem:
        outputs = clock.run(lambda: pipe(texts, batch_size=best))
    entities = {
        (d, int(e["start"]), int(e["end"]), str(e["entity_group"]))
        for d, ents in enumerate(outputs)
        for e in ents
    }
    chunks = _hf_windows(texts, tok, s.stride)
    real = sum(n for doc in chunks for n in doc)
    # Its tokenizer pads a document's windows to the longest; batches pad again.
    padded = _padded_in_order([max(doc) for doc in chunks for _ in doc], best)
    r = row(
        "transformers pipeline (NER)",
        dtype,
        corpus,
        clock,
        1 - real / padded,
        peak_mib=mem["peak_mib"],
        batch_size=best,
        batch_trials_s={str(b): round(t, 3) for b, t in trials.items()},
        own_window_tokens=real,
    )
    return r, entities


def st_row(
    corpus: Corpus, embed_dir: str, s: BenchSettings, dtype: str = "float32"
) -> tuple[dict[str, Any], np.ndarray]:
    """sentence-transformers ``encode`` with ``max_seq_length`` = the job's window, fed the
    text of each of the job's windows (given whole documents it would truncate them),
    normalised. Returns the row and one vector per window, in window order."""
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(embed_dir, device=str(pick_device()), local_files_only=True)
    model.max_seq_length = s.max_length
    model = model.to(DTYPES[dtype])
    texts = corpus.window_texts()

    def encode(x: list[str]) -> np.ndarray:
        v = model.encode(
            x, batch_size=s.st_batch_size, normalize_embeddings=True, convert_to_tensor=True
        )
        return v.float().cpu().numpy()

    encode(texts[: s.warmup(len(texts))])
    clock = Clock()
    with peak_rss() as mem:
        vectors = clock.run(lambda: encode(texts))
    enc = model.tokenizer(texts, truncation=True, max_length=s.max_length)
    lengths = [len(x) for x in enc["input_ids"]]
    order = np.argsort([-len(t) for t in texts], kind="stable")  # encode sorts by characters
    padded = _padded_in_order([lengths[i] for i in order], s.st_batch_size)
    r = row(
        "sentence-transformers encode",
        dtype,
        corpus,
        clock,
        1 - sum(lengths) / padded,
        peak_mib=mem["peak_mib"],
        batch_size=s.st_batch_size,
        own_window_tokens=int(sum(lengths)),
    )
    return r, vectors


def stage_row(
    role: str, corpus: Corpus, model_dir: str, s: BenchSettings, dtype: str
) -> tuple[dict[str, Any], Any]:
    """This project's tokenize stage then its NER or embedding stage, in process, fed
    ``s.docs_per_batch`` documents at a time as the job's Ray batches are. Returns the
    row and the entities (a set) or the normalised window vectors, in window order."""
    from pipeline.stages.embed import EmbedStage
    from pipeline.stages.ner import NerStage
    from pipeline.stages.write import embedding_rows, entity_rows

    tok = Tokenize.of_model(role, model_dir)
    budget = job_batch_tokens(s, model_dir, dtype)
    if role == "ner":
        stage: Any = NerStage(
            NerSettings(
                model_dir,
                s.max_length,
                s.stride,
                dtype,
                aggregation="first",
                decoding=s.decoding,
            ),  # fmt: skip
            EncoderScheduling(budget, compile_model=s.compile_model),
        )
        finish: Callable[[pa.Table], pa.Table] = entity_rows
    else:
        pooling = models.default_pooling(Path(model_dir), model_dir)
        stage = EmbedStage(
            EmbedSettings(model_dir, s.max_length, s.stride, dtype, pooling=pooling),
            EncoderScheduling(budget, compile_model=s.compile_model),
        )
        finish = lambda t: embedding_rows(t, stage.dim)  # noqa: E731
    n_warm = s.warmup(corpus.docs.num_rows)
    for start in range(0, n_warm, s.docs_per_batch):  # as the timed batches, when all
        finish(stage(tok(corpus.docs.slice(start, min(s.docs_per_batch, n_warm - start)))))
    enc = stage.encoder
    real0, padded0 = enc.real_tokens, enc.padded_tokens
    # Timed apart: the tokenizer and the writer's row building run in other actors of the
    # job; the stage alone is the inference actor's own code.
    tokenize, infer, rows, tables = Clock(), Clock(), Clock(), []
    with peak_rss() as mem:
        for batch in corpus.batches(s.docs_per_batch):
            tokens = tokenize.run(lambda b=batch: tok(b))
            annotated = infer.run(lambda t=tokens: stage(t))
            tables.append(rows.run(lambda a=annotated: finish(a)))
    real, padded = enc.real_tokens - real0, enc.padded_tokens - padded0
    extra: dict[str, Any] = {
        "peak_mib": mem["peak_mib"],
        "tokenize_s": round(tokenize.wall_s, 3),
        "stage_s": round(infer.wall_s, 3),
        "rows_s": round(rows.wall_s, 3),
        "stage_tokens_per_s": round(real / max(infer.wall_s, 1e-9), 1),
        "tokens_match": real == corpus.window_tokens,
        "batch_tokens": budget,
    }
    if enc.device.type == "cuda":
        flops = forward_flops(stage.model, corpus.windows.length + corpus.n_special)
        extra["model_flop_per_s"] = flops / max(infer.wall_s, 1e-9)
        extra["gpu"] = torch.cuda.get_device_name()
    both = Clock(
        tokenize.wall_s + infer.wall_s + rows.wall_s, tokenize.cpu_s + infer.cpu_s + rows.cpu_s
    )
    name = "ours: NER stage" if role == "ner" else "ours: embedding stage"
    r = row(name, dtype, corpus, both, 1 - real / max(padded, 1), **extra)
    table = pa.concat_tables(tables)
    if role == "ner":
        return r, entity_set(table)
    return r, np.asarray(table.column(S.EMBEDDING).to_pylist(), dtype=np.float32)


def bare_forward_row(corpus: Corpus, ner_dir: str, s: BenchSettings, dtype: str) -> dict[str, Any]:
    """The NER model's forward passes alone over all of the corpus's windows at once,
    sorted and packed as our stages pack them, outputs discarded: no tokenizing,
    decoding or copying back. The ceiling for any NER code on this model and machine."""
    from pipeline.core.windows import WindowPlan
    from pipeline.stages.encoder import Encoder
    from pipeline.stages.tokenize import column_arrays

    tokens = Tokenize.of_model("ner", ner_dir)(corpus.docs)
    ids = column_arrays(tokens, S.tokens_column("ner", S.TOKEN_IDS))
    enc = Encoder.load(
        EncoderSettings(ner_dir, s.max_length, s.stride, dtype),
        "ner",
        EncoderScheduling(job_batch_tokens(s, ner_dir, dtype), compile_model=s.compile_model),
    )
    plan = WindowPlan.build([len(x) for x in ids], enc.window, s.stride)

    def forward(docs: list[np.ndarray], p: WindowPlan) -> None:
        # The stages' own pass loop, with a forward whose output is dropped on the device.
        enc.run(
            docs,
            p,
            lambda out, mask: (),
            lambda x, mask: enc.model(input_ids=x, attention_mask=mask),
        )

    warm = ids[: s.warmup(len(ids))]
    forward(warm, WindowPlan.build([len(x) for x in warm], enc.window, s.stride))
    real0, padded0 = enc.real_tokens, enc.padded_tokens
    clock = Clock()
    with peak_rss() as mem:
        clock.run(lambda: forward(ids, plan))
    real, padded = enc.real_tokens - real0, enc.padded_tokens - padded0
    name = "bare forward passes (NER model, no decoding)"
    return row(name, dtype, corpus, clock, 1 - real / max(padded, 1), peak_mib=mem["peak_mib"])


def entity_set(table: pa.Table) -> set[Entity]:
    """(document position, start, end, label) of each row of an entities table."""
    cols = [table.column(c).to_pylist() for c in (S.DOC_ID, S.START, S.END, S.LABEL)]
    return {(int(d), int(a), int(b), str(lab)) for d, a, b, lab in zip(*cols)}


def _hf_windows(texts: list[str], tok: Any, stride: int) -> list[list[int]]:
    """Per document, the real length of each window the pipeline computes (its own
    tokenizer call: truncation at ``model_max_length`` with overflow and stride)."""
    out = []
    for t in texts:
        enc = tok(t, truncation=True, stride=stride, return_overflowing_tokens=True)
        out.append([len(x) for x in enc["input_ids"]])
    return out


def _padded_in_order(lengths: list[int], batch_size: int) -> int:
    """Token positions computed when consecutive items are padded per batch."""
    return sum(
        max(lengths[i : i + batch_size]) * len(lengths[i : i + batch_size])
        for i in range(0, len(lengths), batch_size)
    )


def context_row(corpus: Corpus, entities: set[Entity]) -> dict[str, Any]:
    """The entity stage's context alone (sentences, sections, ConText) over the corpus's
    texts and the NER stage's entities, one process on one core; ``mb_per_cpu_s`` is MB
    of note text (UTF-8) per CPU second."""
    from pipeline.context import lexicon
    from pipeline.context.analyse import analyse

    lex = lexicon.load()
    texts = corpus.texts
    spans: list[list[tuple[int, int]]] = [[] for _ in texts]
    for d, a, b, _ in sorted(entities):
        spans[d].append((a, b))
    analyse(texts[0] if texts else "", spans[0] if texts else [], lex)  # compiled once
    clock = Clock()
    clock.run(lambda: [analyse(t, sp, lex) for t, sp in zip(texts, spans)])
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    return row(
        "ours: context stage (sentences, sections, ConText)", "-", corpus, clock, None,
        mb_per_s=round(n_bytes / 1e6 / max(clock.wall_s, 1e-9), 3),
        mb_per_cpu_s=round(n_bytes / 1e6 / max(clock.cpu_s, 1e-9), 3),
        text_mb=round(n_bytes / 1e6, 3), entities=len(entities),
    )  # fmt: skip
