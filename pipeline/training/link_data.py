"""Training data for a linking encoder: gold mentions with their surface text, the
strings an epoch pairs (two names of one concept, or a mention and another string of its
concept), and the pure pieces of a step (length-sorted forward chunks, nearest-name
concepts). Pure apart from reading the tables; lengths in tokens, offsets in characters.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from pipeline import schemas as S
from pipeline.linking.dictionary import normalize_name
from pipeline.storage import files as storage
from pipeline.types import InputError

MENTION_COLUMNS = (S.DOC_ID, S.START, S.END, S.CONCEPT_ID)
UNLINKED = "-1"  # the gold id of a mention no concept fits (NCBI-disease, BC5CDR)


@dataclass(frozen=True)
class Mentions:
    """Gold mentions kept for training: their surface text and concept, and how many of
    the table's rows were left out, by reason."""

    surfaces: list[str]
    concept_ids: list[str]
    rows: int  # as read
    no_concept: int = 0  # concept_id null or empty
    unlinked: int = 0  # concept_id "-1"
    composite: int = 0  # "A|B" or "A+B": no single concept to pull towards
    no_document: int = 0  # doc_id not in the documents table
    empty_surface: int = 0  # start == end, or white space only

    def counts(self) -> dict[str, int]:
        skipped = {k: v for k, v in self.__dict__.items() if isinstance(v, int)}
        return {"kept": len(self.surfaces)} | skipped


def _read(uri: str, what: str, required: tuple[str, ...]) -> pa.Table:
    try:
        schema = storage.parquet_schema(uri)
    except FileNotFoundError as exc:
        raise InputError(f"{what} not found: {uri}") from exc
    missing = [c for c in required if c not in schema.names]
    if missing:
        raise InputError(
            f"{what} {uri} has no column {missing[0]!r} (columns: {schema.names}); "
            f"it needs {', '.join(required)}"
        )
    cols = [*required, *([S.TEXT] if S.TEXT in schema.names and S.TEXT not in required else [])]
    return storage.read_parquet_table(uri, cols)


def read_mentions(docs_uri: str, entities_uri: str) -> Mentions:
    """The gold mentions of ``entities_uri`` (doc_id, start, end, concept_id; an optional
    ``text`` column must equal the document's text[start:end]) whose concept is a single
    id, each with its surface cut from ``docs_uri`` (doc_id, text)."""
    docs = _read(docs_uri, "documents", (S.DOC_ID, S.TEXT))
    ents = _read(entities_uri, "entities", MENTION_COLUMNS)
    text_of = dict(
        zip(
            pc.cast(docs[S.DOC_ID], pa.string()).to_pylist(),
            docs[S.TEXT].to_pylist(),
        )
    )
    given = ents[S.TEXT].to_pylist() if S.TEXT in ents.column_names else None
    ids = pc.cast(ents[S.CONCEPT_ID], pa.string()).to_pylist()
    doc_ids = pc.cast(ents[S.DOC_ID], pa.string()).to_pylist()
    starts, ends = ents[S.START].to_pylist(), ents[S.END].to_pylist()
    skipped = dict.fromkeys(
        ("no_concept", "unlinked", "composite", "no_document", "empty_surface"), 0
    )
    surfaces, concepts = [], []
    for i, (doc, start, end, cid) in enumerate(zip(doc_ids, starts, ends, ids)):
        text = text_of.get(doc)
        if text is None:
            skipped["no_document"] += 1
            continue
        surface = text[start:end]
        if given is not None and given[i] is not None and given[i] != surface:
            raise InputError(
                f"entities {entities_uri}: row {i} (doc_id {doc}, {start}-{end}) has text "
                f"{given[i]!r} but the document reads {surface!r} there"
            )
        cid = (cid or "").strip()
        if not cid:
            skipped["no_concept"] += 1
        elif cid == UNLINKED:
            skipped["unlinked"] += 1
        elif "|" in cid or "+" in cid:
            skipped["composite"] += 1
        elif not surface.strip():
            skipped["empty_surface"] += 1
        else:
            surfaces.append(" ".join(surface.split()))
            concepts.append(cid)
    return Mentions(surfaces, concepts, ents.num_rows, **skipped)


@dataclass(frozen=True)
class PairSource:
    """What an epoch's pairs are drawn from. Strings are indices into one table of
    unique strings; concepts are integer codes."""

    names_by_concept: list[np.ndarray]  # per concept: its names, one per normalized form
    mention_strings: np.ndarray  # per training mention: its string
    mention_concepts: np.ndarray  # per training mention: its concept code
    candidates: list[np.ndarray]  # per mention: the strings it may be paired with

    @classmethod
    def build(
        cls,
        names_by_concept: list[np.ndarray],
        mention_strings: np.ndarray,
        mention_concepts: np.ndarray,
        forms: np.ndarray,
    ) -> PairSource:
        """``forms[s]`` is string ``s``'s normalized form (an integer): a mention is paired
        with another string of its concept (a name, or another mention's surface) of a
        different form where there is one, so "Breast-Cancer" is not pulled towards
        "breast cancer" while a real synonym is at hand."""
        by_concept: dict[int, list[int]] = {}
        for m, c in enumerate(mention_concepts.tolist()):
            by_concept.setdefault(c, []).append(m)
        candidates = []
        for m, (s, c) in enumerate(zip(mention_strings.tolist(), mention_concepts.tolist())):
            others = [mention_strings[o] for o in by_concept[c] if o != m]
            pool = np.unique(np.concatenate([names_by_concept[c], np.asarray(others, np.int64)]))
            pool = pool[pool != s]
            differ = pool[forms[pool] != forms[s]]
            candidates.append(differ if len(differ) else pool)
        return cls(names_by_concept, mention_strings, mention_concepts, candidates)

    @property
    def paired_concepts(self) -> int:
        """Concepts with two names or more: one pair of names each an epoch."""
        return sum(len(n) >= 2 for n in self.names_by_concept)

    @property
    def paired_mentions(self) -> int:
        """Mentions with a string to be paired with: one pair each an epoch."""
        return sum(len(c) > 0 for c in self.candidates)

    def epoch_pairs(self, rng: np.random.Generator) -> np.ndarray:
        """``[n_pairs, 3]``: anchor string, positive string, concept code, shuffled. One pair
        of two different names per concept that has two, and one per mention that has a
        candidate; deterministic for ``rng``."""
        rows = []
        for c, names in enumerate(self.names_by_concept):
            if len(names) >= 2:
                a, b = rng.choice(len(names), 2, replace=False)
                rows.append((names[a], names[b], c))
        for s, c, cand in zip(
            self.mention_strings.tolist(), self.mention_concepts.tolist(), self.candidates
        ):
            if len(cand):
                rows.append((s, cand[rng.integers(len(cand))], c))
        pairs = np.asarray(rows, np.int64).reshape(-1, 3)
        return pairs[rng.permutation(len(pairs))]


def pair_batches(n_pairs: int, batch_pairs: int, min_size: int) -> list[np.ndarray]:
    """Consecutive runs of ``batch_pairs`` pair indices (the pairs are already shuffled);
    a last batch under ``min_size`` pairs (one per worker, and two for a negative) joins
    the one before it."""
    if batch_pairs < 1:
        raise ValueError(f"a step needs at least one pair, got {batch_pairs}")
    batches = [np.arange(i, min(i + batch_pairs, n_pairs)) for i in range(0, n_pairs, batch_pairs)]
    if len(batches) > 1 and len(batches[-1]) < min_size:
        tail = batches.pop()
        batches[-1] = np.concatenate([batches[-1], tail])
    return batches


def length_chunks(lengths: np.ndarray, chunk_tokens: int) -> list[np.ndarray]:
    """Indices of ``lengths`` sorted by length and cut into forward passes whose padded
    size (rows times the longest) stays within ``chunk_tokens``: short names are not
    padded to a long one's length (2x faster a step on names of the dictionaries here).
    A row longer than the budget is a chunk of its own."""
    order = np.argsort(np.asarray(lengths), kind="stable")
    chunks, start = [], 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end - start + 1) * lengths[order[end]] <= chunk_tokens:
            end += 1
        chunks.append(order[start:end])
        start = end
    return chunks


def top1_concepts(queries: np.ndarray, names: np.ndarray, name_codes: np.ndarray) -> np.ndarray:
    """The concept code of each query's nearest name by inner product (cosine for
    L2-normalised vectors); ties go to the first name."""
    out = np.empty(len(queries), np.int64)
    for i in range(0, len(queries), 1024):
        out[i : i + 1024] = name_codes[np.argmax(queries[i : i + 1024] @ names.T, axis=1)]
    return out


def form_codes(strings: list[str]) -> np.ndarray:
    """Each string's normalized form (``normalize_name``), as an integer code."""
    index: dict[str, int] = {}
    return np.asarray([index.setdefault(normalize_name(s), len(index)) for s in strings])
