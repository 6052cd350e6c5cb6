"""GPU stage: one vector per window and one per document."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from pipeline import schemas as S
from pipeline.config import EmbedSettings, EncoderScheduling
from pipeline.core.pooling import document_vector, l2_normalize
from pipeline.core.windows import WindowPlan, window_char_spans
from pipeline.stages.tokenize import column_arrays

if TYPE_CHECKING:  # the module is imported by the driver, which needs no torch
    import torch

ROLE = "embed"


def pool(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Window vectors from token vectors: the first token's (``cls``) or the mean over
    attended positions, special tokens included, as sentence-transformers does."""
    if pooling == "cls":
        return hidden[:, 0]
    m = mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1)


class EmbedStage:
    """Adds ``_chunk_embeddings`` (per window: start, end, n_tokens, embedding) and
    ``_doc_embedding`` (token-weighted mean of the window vectors)."""

    def __init__(self, settings: EmbedSettings, sched: EncoderScheduling) -> None:
        from pipeline.stages.encoder import Encoder  # torch: in the actor only

        self.encoder = Encoder.load(settings, ROLE, sched)
        self.model = self.encoder.model
        self.dim = int(self.model.config.hidden_size)
        self.pooling = settings.pooling
        self.normalize = settings.normalize
        self.stride = settings.stride

    def _forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state

    def _reduce(self, hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (pool(hidden.float(), mask, self.pooling),)

    def window_vectors(self, doc_ids: list[np.ndarray]) -> tuple[WindowPlan, np.ndarray]:
        """The window plan and one un-normalised vector per window, ``[n_windows, dim]``."""
        plan = WindowPlan.build([len(x) for x in doc_ids], self.encoder.window, self.stride)
        outs = self.encoder.run(doc_ids, plan, self._reduce, self._forward)
        vectors = np.stack([o[0] for o in outs]) if outs else np.zeros((0, self.dim), np.float32)
        return plan, vectors

    def __call__(self, batch: pa.Table) -> pa.Table:
        col = lambda name: column_arrays(batch, S.tokens_column(ROLE, name))  # noqa: E731
        ids, starts, ends = col(S.TOKEN_IDS), col(S.TOKEN_STARTS), col(S.TOKEN_ENDS)
        plan, vectors = self.window_vectors(ids)
        chunks, docs = [], []
        for d, ws in enumerate(plan.windows_by_doc(len(ids))):
            if len(ws) == 0:
                chunks.append([])
                docs.append(None)
                continue
            c_start, c_end, c_tokens = window_char_spans(
                plan.start[ws], self.encoder.window, starts[d], ends[d]
            )
            vecs = vectors[ws]
            doc_vec = document_vector(vecs, c_tokens)
            if self.normalize:
                vecs, doc_vec = l2_normalize(vecs), l2_normalize(doc_vec)
            chunks.append(
                [
                    {S.START: int(a), S.END: int(b), S.N_TOKENS: int(t), S.EMBEDDING: v}
                    for a, b, t, v in zip(c_start, c_end, c_tokens, vecs.astype(np.float32))
                ]
            )
            docs.append(doc_vec.astype(np.float32))
        batch = batch.append_column(
            S.CHUNK_EMBEDDINGS, pa.array(chunks, pa.list_(S.chunk_struct(self.dim)))
        )
        return batch.append_column(S.DOC_EMBEDDING, pa.array(docs, S.embedding_type(self.dim)))
