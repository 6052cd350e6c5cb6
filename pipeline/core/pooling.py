"""Pooling of token vectors into window and document vectors (pure numpy / torch-free)."""

from __future__ import annotations

import numpy as np


def l2_normalize(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Rows scaled to unit L2 norm (zero rows stay zero)."""
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norms, eps)


def document_vector(window_vectors: np.ndarray, window_tokens: np.ndarray) -> np.ndarray:
    """Token-weighted mean of a document's (un-normalised) window vectors.

    ``window_tokens`` is each window's count of content tokens, so overlapping
    windows weigh by how much text they cover.
    """
    weights = np.asarray(window_tokens, dtype=np.float64)
    if weights.sum() <= 0:
        weights = np.ones_like(weights)
    return (window_vectors.astype(np.float64) * weights[:, None]).sum(axis=0) / weights.sum()
