"""Side-by-side throughput: what users would run instead, and this project's stages.

Every contender runs in this process on the same documents and the same weights and
returns one row (a dict). Throughput is counted in one unit for every row, the
*window tokens*: each document is cut into the job's windows (``max_length`` tokens
with ``stride`` tokens of overlap) and every window counts its content tokens plus
its special tokens, padding excluded. That is the work every contender has to do;
rows differ only in time. Model loading is outside the timings, except for the Ray
row, which times the whole ``python -m jobs.annotate`` process (start-up included).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch

from pipeline import schemas as S
from pipeline.config import Decoding
from pipeline.core.windows import WindowPlan, window_char_spans
from pipeline.models import loading as models
from pipeline.stages.read import ReadSettings, document_columns
from pipeline.stages.tokenize import Tokenize, column_arrays, special_tokens
from pipeline.storage import files as storage

NER_LABELS = ("O", "B-Disease", "I-Disease")
Entity = tuple[int, int, int, str]  # document index, start char, end char, label


@dataclass(frozen=True)
class BenchSettings:
    """What every contender shares. Lengths are in tokens."""

    max_length: int = 512  # window, special tokens included
    stride: int = 128  # overlap between consecutive windows
    batch_tokens: int | None = None  # per forward pass; None: the job's (job_batch_tokens)
    # Documents per stage call, as the job's Ray batches; None: the size the job picks
    # for the corpus by default (``sizing.docs_per_batch``), so the Ray row runs as users
    # run it.
    docs_per_batch: int | None = None
    hf_batch_sizes: tuple[int, ...] = (1, 8, 32)  # the pipeline runs at the fastest
    trial_docs: int = 48  # documents each pipeline batch size is tried on
    st_batch_size: int = 32  # sentence-transformers' default
    warmup_docs: int = 4
    compile_model: bool = False  # torch.compile our stages' encoders (and the job's)
    # The pipeline's per-word decoding by default, so that the parity check with it
    # compares the same work; "viterbi" times the annotate job's default decoding.
    decoding: Decoding = "greedy"

    def warmup(self, n_docs: int) -> int:
        """Documents a row runs untimed before it is timed. On a GPU, all of them: the
        first pass of each shape picks its kernels (cuDNN's attention plans among them),
        a cost a job's actor pays once in its run, not once per batch; with 4 documents
        of warm-up, the first row timed on an H100 paid it inside its time."""
        return n_docs if torch.cuda.is_available() else self.warmup_docs


@dataclass
class Corpus:
    """The documents under test, in the job's internal columns, and their windows."""

    docs: pa.Table  # document_columns() output
    windows: WindowPlan  # the job's windows over the model tokenizer's tokens
    n_special: int  # special tokens added to every window
    tok_starts: list[np.ndarray]  # per document: token start characters
    tok_ends: list[np.ndarray]

    @property
    def texts(self) -> list[str]:
        return self.docs.column(S.TEXT_INTERNAL).to_pylist()

    @property
    def window_tokens(self) -> int:
        """Real tokens over all windows, special tokens included, padding excluded."""
        return int((self.windows.length + self.n_special).sum())

    def batches(self, size: int) -> Iterator[pa.Table]:
        for i in range(0, self.docs.num_rows, size):
            yield self.docs.slice(i, size)

    def single_window_docs(self) -> np.ndarray:
        counts = np.bincount(self.windows.doc, minlength=self.docs.num_rows)
        return np.flatnonzero(counts == 1)

    def window_texts(self) -> list[str]:
        """Each window's text: from its first token's start to its last token's end."""
        texts, out = self.texts, []
        for d, ws in enumerate(self.windows.windows_by_doc(self.docs.num_rows)):
            if len(ws) == 0:
                continue
            a, b, _ = window_char_spans(
                self.windows.start[ws], self.windows.window, self.tok_starts[d], self.tok_ends[d]
            )
            out.extend(texts[d][int(s) : int(e)] for s, e in zip(a, b))
        return out


def load_documents(uri: str, limit: int | None, text_column: str = "text") -> pa.Table:
    """``doc_id`` (the row's position) and ``text`` of the first ``limit`` usable rows
    of a Parquet file or prefix. Rows whose ``duplicate_of`` column is set (MTSamples
    marks repeated notes so) and blank texts are left out: every contender sees the same
    distinct documents."""
    table = storage.read_parquet_table(uri)
    if "duplicate_of" in table.column_names:
        table = table.filter(pc.is_null(table.column("duplicate_of")))
    text = table.column(text_column)
    table = table.filter(
        pc.fill_null(pc.greater(pc.utf8_length(pc.utf8_trim_whitespace(text)), 0), False)
    )
    if limit is not None:
        table = table.slice(0, limit)
    # Positions as ids: unique whatever the input holds, and they order the outputs.
    ids = pa.array([str(i) for i in range(table.num_rows)], pa.string())
    return pa.table({"doc_id": ids, "text": pc.cast(table.column(text_column), pa.string())})


def repeat_documents(table: pa.Table, times: int) -> pa.Table:
    """``load_documents`` output with every document ``times`` times in a row (copy k of
    document i is document ``k * n + i``), ids renumbered: a corpus of the size a target
    names from a data set with fewer distinct documents. Nothing in the job caches or
    dedupes by text, so a copy costs what a new document of its length costs."""
    if times < 1:
        raise ValueError(f"--repeat must be at least 1, got {times}")
    if times == 1:
        return table
    text = pa.concat_arrays([table.column("text").combine_chunks()] * times)
    ids = pa.array([str(i) for i in range(len(text))], pa.string())
    return pa.table({"doc_id": ids, "text": text})


def prepare_corpus(table: pa.Table, tokenizer_dir: str, s: BenchSettings) -> Corpus:
    docs = document_columns(table, "bench", ReadSettings("doc_id", "text", 10**9, 10**9))
    tok = models.load_tokenizer(Path(tokenizer_dir))
    tokens = Tokenize("bench", models.TokenizerDef.of(tok))(docs)
    col = lambda n: column_arrays(tokens, S.tokens_column("bench", n))  # noqa: E731
    ids, starts, ends = col(S.TOKEN_IDS), col(S.TOKEN_STARTS), col(S.TOKEN_ENDS)
    prefix, suffix = special_tokens(tok)
    n_special = len(prefix) + len(suffix)
    plan = WindowPlan.build([len(x) for x in ids], s.max_length - n_special, s.stride)
    return Corpus(docs, plan, n_special, starts, ends)


# --- models ---------------------------------------------------------------------------


def this_machine() -> dict[str, float]:
    """This machine's resources as a local Ray cluster would count them."""
    return {"CPU": float(os.cpu_count() or 1), "GPU": float(torch.cuda.device_count())}


def job_batch_tokens(s: BenchSettings, model_dir: str, dtype: str) -> int:
    """Our stages' tokens per forward pass: as given, else what the job picks for this
    model on this machine (``sizing.batch_tokens``)."""
    from pipeline.config import Scheduling
    from pipeline.execution import sizing

    width = models.hidden_size(models.read_config(Path(model_dir)))
    sched = Scheduling(batch_tokens=s.batch_tokens)
    return sizing.batch_tokens(sched, width, dtype, int(this_machine()["GPU"]))


def build_ner_model(encoder_dir: str, dest: Path, seed: int = 0) -> str:
    """The encoder with a token-classification head initialised at random (fixed seed):
    the same compute as a fine-tuned NER model, meaningless labels."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_pretrained(
        encoder_dir,
        id2label=dict(enumerate(NER_LABELS)),
        label2id={v: k for k, v in enumerate(NER_LABELS)},
        local_files_only=True,
    )
    model.eval().save_pretrained(str(dest))
    AutoTokenizer.from_pretrained(encoder_dir, local_files_only=True).save_pretrained(str(dest))
    return str(dest)


def build_random_bert(tokenizer_dir: str, dest: Path, size: str, seed: int = 0) -> str:
    """A random-weight BERT with the tokenizer of ``tokenizer_dir``: ``bert-base``
    (12 layers, hidden 768, ~110M parameters), ``minilm-l6`` (6 layers, hidden 384) or
    ``tiny`` (2 layers, hidden 32)."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    tok = AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
    dims = {
        "bert-base": (768, 12, 12, 3072),
        "minilm-l6": (384, 6, 12, 1536),  # all-MiniLM-L6-v2's shapes: its compute, no weights
        "tiny": (32, 2, 2, 64),
    }[size]
    hidden, layers, heads, inter = dims
    cfg = BertConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        intermediate_size=inter,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(cfg).eval().save_pretrained(str(dest))
    tok.save_pretrained(str(dest))
    return str(dest)


def forward_flops(model: torch.nn.Module, window_lengths: np.ndarray) -> float:
    """Model FLOPs of one forward pass over windows of these real lengths (tokens):
    2 × non-embedding parameters per token, plus attention (scores and mixing),
    4 · layers · length · hidden per token."""
    cfg = model.config
    skip = ("embeddings", "pooler")  # lookups, and a layer applied to one token a window
    params = sum(p.numel() for n, p in model.named_parameters() if not any(k in n for k in skip))
    n = window_lengths.astype(np.float64)
    attention = 4 * cfg.num_hidden_layers * cfg.hidden_size * n * n
    return float((2 * params * n).sum() + attention.sum())


# --- measurement -------------------------------------------------------------------------


def _vm_hwm_bytes(pid: int | str = "self") -> int | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


@contextmanager
def peak_rss() -> Iterator[dict[str, float]]:
    """Peak resident memory of this process inside the block, MiB (Linux: VmHWM, reset
    through clear_refs; elsewhere ru_maxrss, which never goes down)."""
    out: dict[str, float] = {}
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass
    try:
        yield out
    finally:
        hwm = _vm_hwm_bytes()
        if hwm is None:
            import resource

            hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["peak_mib"] = hwm / 2**20


@dataclass
class Clock:
    """Wall and CPU seconds (all threads of this process) spent inside ``run``; the CPU
    figure is the less noisy one on a machine shared with other work."""

    wall_s: float = 0.0
    cpu_s: float = 0.0

    def run(self, fn: Callable[[], Any]) -> Any:
        _sync()
        w0, c0 = time.perf_counter(), time.process_time()
        result = fn()
        _sync()
        self.wall_s += time.perf_counter() - w0
        self.cpu_s += time.process_time() - c0
        return result


def row(
    name: str,
    dtype: str,
    corpus: Corpus,
    clock: Clock,
    padding: float | None,
    **extra: Any,
) -> dict[str, Any]:
    """One table row. Rates are in window tokens (see the module docstring); ``padding``
    is the share of this row's own computed token positions that were padding."""
    tokens, wall = corpus.window_tokens, max(clock.wall_s, 1e-9)
    out = {
        "row": name,
        "dtype": dtype,
        "docs": corpus.docs.num_rows,
        "tokens": tokens,
        "wall_s": round(clock.wall_s, 3),
        "cpu_s": round(clock.cpu_s, 3),
        "tokens_per_s": round(tokens / wall, 1),
        "tokens_per_cpu_s": round(tokens / max(clock.cpu_s, 1e-9), 1),
        "docs_per_s": round(corpus.docs.num_rows / wall, 3),
        "padding": None if padding is None else round(padding, 4),
    }
    out.update(extra)
    return out


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


# --- checks --------------------------------------------------------------------------------


def entity_agreement(ours: set[Entity], ref: set[Entity]) -> dict[str, Any]:
    """Exact (document, start, end, label) matches; ``agreement`` is |both| / |either|."""
    both, either = len(ours & ref), len(ours | ref)
    return {
        "identical": ours == ref,
        "ours": len(ours),
        "reference": len(ref),
        "common": both,
        "agreement": 1.0 if either == 0 else round(both / either, 5),
    }


def cosine_agreement(ours: np.ndarray, ref: np.ndarray, rows: np.ndarray) -> dict[str, Any]:
    """Cosine between L2-normalised vectors, over the selected window rows."""
    if len(rows) == 0:
        return {"windows": 0, "min": None, "mean": None}
    cos = (ours[rows] * ref[rows]).sum(axis=1)
    return {
        "windows": int(len(rows)),
        "min": round(float(cos.min()), 6),
        "mean": round(float(cos.mean()), 6),
    }
