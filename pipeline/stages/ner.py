"""GPU stage: token classification over windows, stitched into character spans."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.spans import LabelScheme, Spans, decode_spans
from pipeline.stages.tokenize import column_arrays
from pipeline.windows import WindowPlan, window_owner

if TYPE_CHECKING:  # the module is imported by the driver, which needs no torch
    import torch

ROLE = "ner"


class NerStage:
    """Adds ``_entities`` (list of start, end, label, score) to each document row.

    Each token's prediction comes from the window where it has the most context on
    both sides; words and entities are then formed over the whole document, so an
    entity at a window edge is neither cut nor duplicated.
    """

    def __init__(
        self,
        model_dir: str,
        max_length: int,
        stride: int,
        aggregation: str,
        dtype: str,
        batch_tokens: int,
        trust_remote_code: bool = False,
        allow_pickle: bool = False,
        threads: int | None = None,
        compile_model: bool = False,
    ) -> None:
        from pipeline.stages.encoder import Encoder  # torch: in the actor only

        self.encoder = Encoder.load(
            model_dir, "ner", max_length, dtype, batch_tokens, trust_remote_code, allow_pickle,
            threads, compile_model,
        )  # fmt: skip
        self.model = self.encoder.model
        self.id2label = {int(k): v for k, v in self.model.config.id2label.items()}
        self.scheme = LabelScheme.from_id2label(self.id2label)
        self.aggregation = aggregation
        self.stride = stride
        self.n_prefix = len(self.encoder.prefix)

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).logits

    def _reduce(self, logits: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        # Only label ids and their probabilities leave the device; full label
        # probabilities only for the `average` strategy (n_labels floats a token).
        probs = logits.float().softmax(dim=-1)
        score, label = probs.max(dim=-1)
        out = (label.int(), score)
        return (*out, probs) if self.aggregation == "average" else out

    def doc_predictions(
        self, n_tokens: int, starts: np.ndarray, outs: list[tuple[np.ndarray, ...]]
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """One document's token label ids, scores and (for ``average``) probabilities,
        each token's taken from its best-placed window (``starts``: the windows' first
        tokens, ``outs``: their reduced outputs, in window order)."""
        label = np.zeros(n_tokens, dtype=np.int64)
        score = np.zeros(n_tokens, dtype=np.float32)
        average = self.aggregation == "average"
        probs = np.zeros((n_tokens, len(self.id2label)), np.float32) if average else None
        owner = window_owner(n_tokens, starts, self.encoder.window)
        for k, (start, out) in enumerate(zip(starts.tolist(), outs)):
            pos = np.flatnonzero(owner == k)
            col = self.n_prefix + pos - start
            label[pos] = out[0][col]
            score[pos] = out[1][col]
            if probs is not None:
                probs[pos] = out[2][col]
        return label, score, probs

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
        spans: list[Spans | None] = [None] * len(ids)

        def decode(d: int, windows: np.ndarray, outs: list[tuple[np.ndarray, ...]]) -> None:
            # Runs while the device computes later passes of this batch.
            label, score, probs = self.doc_predictions(len(ids[d]), plan.start[windows], outs)
            spans[d] = decode_spans(
                label, score, words[d], starts[d], ends[d], self.scheme, self.aggregation,
                texts[d], probs,
            )  # fmt: skip

        self.encoder.run(ids, plan, self._reduce, self._forward, on_doc=decode)
        n_windows = np.bincount(plan.doc, minlength=len(ids)).astype(np.int32)
        batch = batch.append_column(S.ENTITIES, entities_column(spans, self.scheme.tags))
        return batch.append_column(S.N_WINDOWS_INTERNAL, pa.array(n_windows, pa.int32()))


def entities_column(spans: list[Spans], tags: tuple[str, ...]) -> pa.Array:
    """The ``list<entity>`` column of a batch, one list per document, assembled from
    the spans' arrays (a Python object per entity would cost more than decoding it)."""
    offsets = np.zeros(len(spans) + 1, dtype=np.int32)
    np.cumsum([len(s) for s in spans], out=offsets[1:])

    def flat(field: str, dtype: type) -> pa.Array:
        parts = [getattr(s, field) for s in spans]
        return pa.array(np.concatenate(parts).astype(dtype) if parts else np.zeros(0, dtype))

    labels = pa.array(tags, pa.string()).take(flat("tag", np.int32))
    values = pa.StructArray.from_arrays(
        [flat("start", np.int32), flat("end", np.int32), labels, flat("score", np.float32)],
        fields=list(S.ENTITY_STRUCT),
    )
    return pa.ListArray.from_arrays(pa.array(offsets), values, type=pa.list_(S.ENTITY_STRUCT))
