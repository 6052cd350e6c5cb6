"""Training data on the annotate job's own tokenization and windows: gold character spans
become token labels (``alignment``), documents become the windows the job feeds, and each
epoch's steps are drawn from them. Pure apart from reading the tables; lengths in tokens."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.core.windows import WindowPlan
from pipeline.stages.read import ReadSettings, document_columns
from pipeline.stages.tokenize import Tokenize, column_arrays
from pipeline.storage import files as storage
from pipeline.training.alignment import AlignmentReport, align_spans, window_labels

ROLE = "ner"


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
    special: tuple[list[int], list[int]],
    crops: int = 0,
    rng: np.random.Generator | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Input ids and label ids of every window, laid out as the job feeds them, then
    ``crops`` random windows per document (see ``random_crops``), each between the
    tokenizer's ``special`` (prefix, suffix) tokens."""
    prefix, suffix = special
    ids = column_arrays(batch, S.tokens_column(ROLE, S.TOKEN_IDS))
    lengths = [len(x) for x in ids]
    plan = WindowPlan.build(lengths, window, stride)
    extra = random_crops(lengths, window, crops, rng or seeded(0))
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
    lengths: np.ndarray, batch_tokens: int, min_size: int, rng: np.random.Generator
) -> list[np.ndarray]:
    """Window indices of each step: shuffled, then sorted by length within blocks of about
    32 steps, and cut into batches whose padded size (windows times the longest) stays
    within ``batch_tokens``, so short windows are not padded to a long one's length and a
    step holds about as many tokens whatever its windows' lengths. A window longer than
    the budget is a batch of its own; a batch under ``min_size`` windows (one per worker)
    joins the one before it. Every window once; deterministic for ``rng``."""
    lengths = np.asarray(lengths)
    if batch_tokens < 1:
        raise ValueError(f"the token budget of a step must be positive, got {batch_tokens}")
    perm = rng.permutation(len(lengths))
    mean = max(1.0, float(lengths.mean())) if len(lengths) else 1.0
    block = max(1, int(32 * batch_tokens / mean))
    batches: list[np.ndarray] = []
    for c in range(0, len(perm), block):
        part = perm[c : c + block]
        part = part[np.argsort(-lengths[part], kind="stable")]
        i = 0
        while i < len(part):
            # sorted longest first: the first window sets the batch's padded length
            k = max(1, batch_tokens // max(1, int(lengths[part[i]])))
            b = part[i : i + k]
            if len(b) < min_size and batches:
                batches[-1] = np.concatenate([batches[-1], b])
            else:
                batches.append(b)
            i += k
    return [batches[i] for i in rng.permutation(len(batches))]


def seeded(*seed: int) -> np.random.Generator:
    """A generator for a tuple of seeds (the run's seed, the epoch, ...)."""
    return np.random.default_rng(list(seed))
