"""Candidate concepts for mentions: exact dense search over a dictionary's name vectors,
combined with a character 3-gram TF-IDF score (as BioSyn and scispaCy use), so that
rare strings and abbreviations still match; an exact normalised name match ranks first.

Pure: the caller supplies vectors (unit length) and strings; nothing here loads a model
or reads a file. Scores: ``(dense cosine + w * sparse cosine) / (1 + w)``, at most 1; an
exact name match scores 1.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from scipy import sparse
from sklearn.feature_extraction.text import TfidfVectorizer

from pipeline.linking.dictionary import Dictionary, normalize_name

if TYPE_CHECKING:  # the driver builds the index without torch; actors search with it
    import torch

# Names scored per block: bounds the score matrix (mentions x block) whatever the size
# of the dictionary.
BLOCK_NAMES = 65536
# Names kept per block and mention before concepts are merged: a concept has several
# names, and the top k concepts need their best names among these.
NAMES_PER_CONCEPT = 8
# Mentions scored together: bounds the score matrix however many entities a batch has.
MENTIONS_PER_PASS = 512
DEFAULT_SPARSE_WEIGHT = 0.5


@dataclass(frozen=True)
class Candidate:
    concept_id: str
    name: str
    score: float
    exact: bool = False


def name_hashes(normalized: list[str]) -> np.ndarray:
    """A 64-bit hash per normalised name (exact-match lookup without a dict of strings)."""
    out = np.empty(len(normalized), np.uint64)
    for i, s in enumerate(normalized):
        out[i] = int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little")
    return out


def ngram_vectorizer() -> TfidfVectorizer:
    """Character 3-grams within words (padded by a space), TF-IDF, unit length."""
    return TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), dtype=np.float32)


@dataclass
class LinkIndex:
    """A dictionary ready to search: per name its concept (code), label (code, -1 for
    none), unit vector and n-gram vector; names sorted by their normalised form's hash
    for exact lookups."""

    concept_ids: pa.Array  # per concept code
    names: pa.Array  # per name
    concept_of: np.ndarray  # int32 per name: index into concept_ids
    count_of: np.ndarray  # int32 per name: the dictionary's rows of that (concept, name)
    label_of: np.ndarray  # int32 per name: index into labels, -1 for none
    labels: list[str]
    vectors: np.ndarray  # [names, dim], float16 or float32, unit rows
    ngrams: sparse.csr_matrix  # [names, n-grams], unit rows
    vectorizer: TfidfVectorizer
    hash_order: np.ndarray  # name indices sorted by hash
    hash_sorted: np.ndarray  # the hashes in that order

    @classmethod
    def build(cls, dictionary: Dictionary, vectors: np.ndarray) -> LinkIndex:
        if len(vectors) != len(dictionary):
            raise ValueError(f"{len(vectors)} vectors for {len(dictionary)} names")
        normalized = [normalize_name(n) for n in dictionary.names]
        vectorizer = ngram_vectorizer()
        ngrams = vectorizer.fit_transform(normalized).tocsr()
        concepts, concept_of = np.unique(
            np.array(dictionary.concept_ids, dtype=object), return_inverse=True
        )
        label_of, labels = dictionary.label_codes()
        hashes = name_hashes(normalized)
        order = np.argsort(hashes, kind="stable")
        return cls(
            concept_ids=pa.array(concepts.tolist(), pa.string()),
            names=pa.array(dictionary.names, pa.string()),
            concept_of=concept_of.astype(np.int32),
            count_of=np.asarray(dictionary.counts or [1] * len(dictionary), np.int32),
            label_of=label_of,
            labels=labels,
            vectors=vectors,
            ngrams=ngrams,
            vectorizer=vectorizer,
            hash_order=order,
            hash_sorted=hashes[order],
        )

    def __len__(self) -> int:
        return len(self.names)

    def exact_matches(self, normalized: str) -> np.ndarray:
        """Indices of the names whose normalised form is ``normalized``."""
        if not normalized:
            return np.zeros(0, np.int64)
        h = name_hashes([normalized])[0]
        lo = np.searchsorted(self.hash_sorted, h, side="left")
        hi = np.searchsorted(self.hash_sorted, h, side="right")
        found = self.hash_order[lo:hi]
        # a 64-bit collision is improbable, not impossible
        return np.array(
            [i for i in found if normalize_name(self.names[int(i)].as_py()) == normalized],
            np.int64,
        )

    def label_code(self, label: str | None) -> int:
        """The code of an entity label the dictionary knows (case-insensitive), else -1:
        an entity whose label it does not know may match any name."""
        if not label:
            return -1
        folded = label.casefold()
        for i, lab in enumerate(self.labels):
            if lab.casefold() == folded:
                return i
        return -1


def _combined(dense: torch.Tensor, ngram: torch.Tensor, weight: float) -> torch.Tensor:
    """The one definition of a candidate's score."""
    return (dense + weight * ngram) / (1.0 + weight)


@dataclass(frozen=True)
class _Queries:
    vectors: torch.Tensor  # [mentions, dim] float32, on the scoring device
    ngrams: sparse.csr_matrix
    labels: np.ndarray  # label code per mention, -1: any


def _block_scores(
    index: LinkIndex, vectors: torch.Tensor, q: _Queries, a: int, b: int, weight: float
) -> torch.Tensor:
    """Combined scores [mentions, b - a] of names a..b; names of another known label
    than the mention's are -inf."""
    import torch

    block, queries, q_ngrams, q_labels = vectors[a:b], q.vectors, q.ngrams, q.labels
    dense = queries.to(block.dtype) @ block.T if block.is_cuda else queries @ block.float().T
    ngram = (q_ngrams @ index.ngrams[a:b].T).toarray()
    scores = _combined(dense.float(), torch.from_numpy(ngram).to(dense.device), weight)
    codes = torch.from_numpy(index.label_of[a:b]).to(scores.device)
    q = torch.from_numpy(q_labels).to(scores.device)
    other = (codes[None, :] != q[:, None]) & (codes[None, :] >= 0) & (q[:, None] >= 0)
    return scores.masked_fill(other, float("-inf"))


def search(
    index: LinkIndex,
    vectors: torch.Tensor,
    queries: np.ndarray,
    mentions: list[str],
    labels: list[str | None],
    top_k: int,
    sparse_weight: float = DEFAULT_SPARSE_WEIGHT,
) -> list[list[Candidate]]:
    """The ``top_k`` best concepts of each mention, best first, each with its best name.

    ``vectors`` is ``index.vectors`` as a tensor on the device that scores (float16 on a
    GPU is computed in float16, anything on the CPU in float32); ``queries`` the mentions'
    unit vectors [mentions, dim]. Order: exact normalised name matches first, then score,
    then concept id and name, so that ties always break the same way."""
    out: list[list[Candidate]] = []
    for a in range(0, len(mentions), MENTIONS_PER_PASS):
        b = a + MENTIONS_PER_PASS
        out += _search(index, vectors, queries[a:b], mentions[a:b], labels[a:b], top_k,
                       sparse_weight)  # fmt: skip
    return out


def _search(
    index: LinkIndex,
    vectors: torch.Tensor,
    queries: np.ndarray,
    mentions: list[str],
    labels: list[str | None],
    top_k: int,
    sparse_weight: float,
) -> list[list[Candidate]]:
    import torch

    if not mentions:
        return []
    normalized = [normalize_name(m) for m in mentions]
    q_labels = np.array([index.label_code(lab) for lab in labels], np.int32)
    q = torch.from_numpy(np.ascontiguousarray(queries, np.float32)).to(vectors.device)
    batch = _Queries(q, index.vectorizer.transform(normalized).tocsr(), q_labels)
    per_block = min(len(index), top_k * NAMES_PER_CONCEPT)
    kept_scores, kept_idx = [], []
    for a in range(0, len(index), BLOCK_NAMES):
        b = min(len(index), a + BLOCK_NAMES)
        scores = _block_scores(index, vectors, batch, a, b, sparse_weight)
        top = torch.topk(scores, min(per_block, b - a), dim=1)
        kept_scores.append(top.values.cpu())
        kept_idx.append(top.indices.cpu() + a)
    all_scores = torch.cat(kept_scores, dim=1).numpy()
    all_idx = torch.cat(kept_idx, dim=1).numpy()
    out = []
    for m in range(len(mentions)):
        if not normalized[m]:  # no letter or digit: nothing to link by
            out.append([])
            continue
        exact = [
            int(i)
            for i in index.exact_matches(normalized[m])
            if q_labels[m] < 0 or index.label_of[i] < 0 or index.label_of[i] == q_labels[m]
        ]
        if exact:
            exact = _exact_order(
                index, exact, (vectors[exact].float() @ q[m].float()).cpu().numpy()
            )
        scored = [(float(s), int(i)) for s, i in zip(all_scores[m], all_idx[m]) if np.isfinite(s)]
        out.append(_concepts(index, exact, scored, top_k))
    return out


def _exact_order(index: LinkIndex, exact: list[int], dense: np.ndarray) -> list[int]:
    """Names equal to the mention, best first: of the concept the dictionary gives that
    name most often (a training mention annotated 8 times as one concept), then by the
    model's score."""
    weight: dict[int, int] = {}
    for i in exact:
        c = int(index.concept_of[i])
        weight[c] = weight.get(c, 0) + int(index.count_of[i])
    keys = [(-weight[int(index.concept_of[i])], -float(d), i) for i, d in zip(exact, dense)]
    return [i for *_, i in sorted(keys)]


def _concepts(
    index: LinkIndex, exact: list[int], scored: list[tuple[float, int]], top_k: int
) -> list[Candidate]:
    """Best name per concept, ranked: exact matches (score 1, in the given order) first,
    then by score, concept id and name."""
    rows: list[tuple[int, float, str, str]] = []
    for rank, i in enumerate(exact):
        rows.append((0, float(rank), *_names(index, i)))
    exact_set = set(exact)
    rows += [(1, -s, *_names(index, i)) for s, i in scored if i not in exact_set]
    rows.sort()
    out: list[Candidate] = []
    seen: set[str] = set()
    for group, key, concept, name in rows:
        if concept in seen:
            continue
        seen.add(concept)
        out.append(Candidate(concept, name, 1.0 if group == 0 else -key, group == 0))
        if len(out) == top_k:
            break
    return out


def _names(index: LinkIndex, i: int) -> tuple[str, str]:
    return index.concept_ids[int(index.concept_of[i])].as_py(), index.names[i].as_py()
