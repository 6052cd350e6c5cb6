"""GPU stage: token classification over windows, stitched into character spans."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.config import EncoderScheduling, NerSettings
from pipeline.core.spans import LabelScheme, Spans, TokenPredictions, decode_documents
from pipeline.core.windows import WindowPlan
from pipeline.stages.tokenize import column_arrays

if TYPE_CHECKING:  # the module is imported by the driver, which needs no torch
    import torch

ROLE = "ner"


class NerStage:
    """Adds ``_entities`` (list of start, end, label, score) to each document row.

    Each token's prediction comes from the window where it has the most context on
    both sides; words and entities are then formed over the whole document, so an
    entity at a window edge is neither cut nor duplicated.
    """

    def __init__(self, settings: NerSettings, sched: EncoderScheduling) -> None:
        from pipeline.stages.encoder import Encoder  # torch: in the actor only

        self.encoder = Encoder.load(settings, ROLE, sched)
        self.model = self.encoder.model
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.scheme = LabelScheme.from_id2label(self.id2label)
        self.aggregation = settings.aggregation
        self.decoding = settings.decoding
        # Full label probabilities leave the device only when decoding needs them.
        self.full_probs = self.aggregation == "average" or self.decoding == "viterbi"
        self.stride = settings.stride
        self.n_prefix = len(self.encoder.prefix)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits

    def _reduce(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Label ids and their probabilities leave the device; full label probabilities
        # (n_labels floats a token) only for `average` or Viterbi decoding.
        probs = logits.float().softmax(dim=-1)
        score, label = probs.max(dim=-1)
        out = (label.int(), score)
        return (*out, probs) if self.full_probs else out

    def predictions(
        self, docs: list[int], by_doc: list[np.ndarray], owned: tuple[np.ndarray, np.ndarray],
        plan: WindowPlan, out: list[tuple[np.ndarray, ...]],
    ) -> list[np.ndarray]:  # fmt: skip
        """The token label ids, scores and (for ``average``) probabilities of ``docs``,
        concatenated in that order, each token's taken from its best-placed window
        (``owned``: :meth:`WindowPlan.owned`; ``out``: the windows' reduced outputs)."""
        lo, hi = owned
        first = self.n_prefix - plan.start  # column of a window's token 0 in its output
        n_out = 3 if self.full_probs else 2
        parts: list[list[np.ndarray]] = [[] for _ in range(n_out)]
        for d in docs:
            for w in by_doc[d].tolist():
                a, b = first[w] + lo[w], first[w] + hi[w]
                for part, arr in zip(parts, out[w]):
                    part.append(arr[a:b])
        n_labels = len(self.id2label)
        empty = [np.zeros(0, np.int32), np.zeros(0, np.float32), np.zeros((0, n_labels), "f4")]
        return [np.concatenate(p) if p else e for p, e in zip(parts, empty)]

    def __call__(self, batch: pa.Table) -> pa.Table:
        col = lambda name: column_arrays(batch, S.tokens_column(ROLE, name))  # noqa: E731
        ids, starts, ends, words = (
            col(S.TOKEN_IDS),
            col(S.TOKEN_STARTS),
            col(S.TOKEN_ENDS),
            col(S.WORD_IDS),
        )
        texts = batch.column(S.TEXT_INTERNAL).to_pylist()
        plan = WindowPlan.build([len(x) for x in ids], self.encoder.window, self.stride)
        by_doc, owned = plan.windows_by_doc(len(ids)), plan.owned()
        decoded: list[tuple[list[int], Spans, np.ndarray]] = []

        def decode(docs: list[int], out: list[tuple[np.ndarray, ...]]) -> None:
            # The documents one pass finished, decoded together while the device computes
            # the next passes.
            label, score, *probs = self.predictions(docs, by_doc, owned, plan, out)
            cat = lambda xs: np.concatenate([xs[d] for d in docs])  # noqa: E731
            bounds = np.zeros(len(docs) + 1, dtype=np.int64)
            np.cumsum([len(ids[d]) for d in docs], out=bounds[1:])
            pred = TokenPredictions(
                label, score, cat(words), cat(starts), cat(ends), probs[0] if probs else None
            )
            doc_texts = [texts[d] for d in docs]
            spans, counts = decode_documents(
                pred, bounds, doc_texts, self.scheme, self.aggregation, self.decoding
            )
            decoded.append((docs, spans, counts))

        self.encoder.run(ids, plan, self._reduce, self._forward, on_docs=decode)
        n_windows = np.bincount(plan.doc, minlength=len(ids)).astype(np.int32)
        entities = entities_column(decoded, len(ids), self.scheme.tags)
        batch = batch.append_column(S.ENTITIES, entities)
        return batch.append_column(S.N_WINDOWS_INTERNAL, pa.array(n_windows, pa.int32()))


def entities_column(
    decoded: list[tuple[list[int], Spans, np.ndarray]], n_docs: int, tags: tuple[str, ...]
) -> pa.Array:
    """The ``list<entity>`` column of a batch, one list per document, from the spans
    decoded in groups of documents (documents, their spans one after the other, their
    entity counts), in any order; a Python object per entity would cost more than
    decoding it."""
    docs = np.array([d for g in decoded for d in g[0]], dtype=np.int64)
    if sorted(docs.tolist()) != list(range(n_docs)):
        raise AssertionError("every document of the batch must be decoded exactly once")
    counts = np.concatenate([g[2] for g in decoded]) if decoded else np.zeros(0, np.int64)
    src = np.zeros(len(docs), dtype=np.int64)  # each document's first entity, as decoded
    np.cumsum(counts[:-1], out=src[1:])
    order = np.argsort(docs)
    offsets = np.zeros(n_docs + 1, dtype=np.int64)
    np.cumsum(counts[order], out=offsets[1:])
    # Entity i of the batch in document order, read from where its document's are.
    take = np.repeat(src[order] - offsets[:-1], counts[order]) + np.arange(offsets[-1])

    def flat(field: str, dtype: type) -> pa.Array:
        parts = [getattr(g[1], field) for g in decoded]
        values = np.concatenate(parts) if parts else np.zeros(0, dtype)
        return pa.array(values[take].astype(dtype))

    labels = pa.array(tags, pa.string()).take(flat("tag", np.int32))
    values = pa.StructArray.from_arrays(
        [flat("start", np.int32), flat("end", np.int32), labels, flat("score", np.float32)],
        fields=list(S.ENTITY_STRUCT),
    )
    offsets_arr = pa.array(offsets.astype(np.int32))
    return pa.ListArray.from_arrays(offsets_arr, values, type=pa.list_(S.ENTITY_STRUCT))
