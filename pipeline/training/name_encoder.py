"""The torch side of linking training, imported by the Ray Train workers only: the
encoder as the annotate job's link stage computes a name's vector (the model's last
hidden state pooled with ``pipeline.stages.embed.pool``, L2-normalised), and SapBERT's
loss over a step's vectors."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pipeline.stages.embed import pool
from pipeline.training.link_data import length_chunks
from pipeline.training.link_loop import MultiSimilarity


def multi_similarity_loss(
    vectors: torch.Tensor, concepts: torch.Tensor, params: MultiSimilarity
) -> torch.Tensor:
    """Mean over the step's strings (``vectors`` L2-normalised, ``[n, dim]``) of the
    loss of each as anchor: the pairs of the all-triplets margin miner, then the
    multi-similarity loss over them; an anchor with no pair left adds 0, so the loss
    reads the same from step to step."""
    sim = vectors @ vectors.T
    same = concepts[:, None] == concepts[None, :]
    pos = same & ~torch.eye(len(vectors), dtype=torch.bool, device=vectors.device)
    neg = ~same
    with torch.no_grad():  # the miner: triplets (a, p, n) with s_ap - s_an <= margin
        s = sim.detach()
        hardest_neg = s.masked_fill(~neg, float("-inf")).amax(1, keepdim=True)
        easiest_pos = s.masked_fill(~pos, float("inf")).amin(1, keepdim=True)
        pos = pos & (s - hardest_neg <= params.margin)
        neg = neg & (easiest_pos - s <= params.margin)
    pos_loss = _log1p_sum_exp(-params.alpha * (sim - params.base), pos) / params.alpha
    neg_loss = _log1p_sum_exp(params.beta * (sim - params.base), neg) / params.beta
    return (pos_loss + neg_loss).mean()


def _log1p_sum_exp(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """log(1 + sum of exp(x) over ``mask``) per row, stably; 0 for an empty row."""
    x = x.masked_fill(~mask, float("-inf"))
    return torch.logsumexp(torch.cat([torch.zeros_like(x[:, :1]), x], dim=1), dim=1)


class NameEncoder(torch.nn.Module):
    """One forward call for a step's strings, in length-sorted chunks (one DDP forward
    however many chunks); returns their vectors in chunk order, L2-normalised."""

    def __init__(self, model: torch.nn.Module, pooling: str) -> None:
        super().__init__()
        self.model = model
        self.pooling = pooling

    def forward(self, chunks: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        vectors = []
        for ids, mask in chunks:
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            vectors.append(pool(hidden.float(), mask, self.pooling))
        return F.normalize(torch.cat(vectors), dim=-1)


def with_specials(
    content: list[np.ndarray], max_length: int, special: tuple[list[int], list[int]]
) -> list[np.ndarray]:
    """Each string's token ids between the tokenizer's special tokens, its content cut
    so that the whole stays within ``max_length`` tokens."""
    prefix, suffix = (np.asarray(s, np.int64) for s in special)
    keep = max_length - len(prefix) - len(suffix)
    return [np.concatenate([prefix, c[:keep].astype(np.int64), suffix]) for c in content]


def chunk_tensors(
    rows: list[np.ndarray], chunk_tokens: int, pad_id: int, device: Any
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], np.ndarray]:
    """The padded (ids, mask) of each length-sorted chunk, and the row order they hold."""
    lengths = np.asarray([len(r) for r in rows])
    chunks = length_chunks(lengths, chunk_tokens)
    out = []
    for c in chunks:
        width = int(lengths[c].max())
        ids = np.full((len(c), width), pad_id, np.int64)
        mask = np.zeros((len(c), width), np.int64)
        for k, i in enumerate(c.tolist()):
            ids[k, : lengths[i]] = rows[i]
            mask[k, : lengths[i]] = 1
        out.append((torch.from_numpy(ids).to(device), torch.from_numpy(mask).to(device)))
    return out, np.concatenate(chunks) if chunks else np.zeros(0, np.int64)


def embed_rows(
    encoder: NameEncoder, rows: list[np.ndarray], chunk_tokens: int, pad_id: int, device: Any
) -> np.ndarray:
    """L2-normalised vectors of ``rows`` (token ids with specials), in their order; each
    distinct row is encoded once."""
    index: dict[bytes, int] = {}
    which = np.asarray([index.setdefault(r.tobytes(), len(index)) for r in rows], np.int64)
    unique = [None] * len(index)
    for r, k in zip(rows, which.tolist()):
        unique[k] = r
    vectors = np.zeros((len(unique), encoder.model.config.hidden_size), np.float32)
    with torch.inference_mode():
        for start in range(0, len(unique), 8192):  # a bounded set of chunks at a time
            chunks, order = chunk_tensors(
                unique[start : start + 8192], chunk_tokens, pad_id, device
            )
            vectors[start + order] = encoder(chunks).float().cpu().numpy()
    return vectors[which]
