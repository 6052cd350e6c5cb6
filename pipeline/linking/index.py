"""The name vectors of a (dictionary, link model) pair, cached on the node next to the
model cache, keyed by both hashes: a rerun with an unchanged dictionary and model never
embeds its names again; any change to either is another key."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from pipeline.linking.dictionary import Dictionary
from pipeline.models import loading as models
from pipeline.models.loading import ModelInfo

log = logging.getLogger(__name__)

# Part of every key: a change to how names are encoded or stored is a new key.
INDEX_VERSION = 1
VECTORS = "vectors.npy"
META = "index.json"


def index_key(dictionary: Dictionary, info: ModelInfo) -> str:
    parts = {
        "version": INDEX_VERSION,
        "dictionary_sha256": dictionary.names_sha256,  # the vectors depend on the names alone
        "weights_sha256": info.weights_sha256,
        "tokenizer_sha256": info.tokenizer_sha256,
        "pooling": info.pooling,
        "max_length": info.max_length,
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:24]


def index_dir(key: str, cache_dir: Path | None = None) -> Path:
    return (cache_dir or models.default_cache_dir()) / "link-index" / key


def load_vectors(key: str, n_names: int, cache_dir: Path | None = None) -> np.ndarray | None:
    """The cached vectors of ``key``, or None when there are none (or they are damaged)."""
    path = index_dir(key, cache_dir) / VECTORS
    if not path.exists():
        return None
    try:
        vectors = np.load(path)
    except (OSError, ValueError) as exc:
        log.warning("link index cache %s is unreadable (%s): embedding again", key, exc)
        return None
    if vectors.ndim != 2 or len(vectors) != n_names:
        log.warning("link index cache %s holds %s, not %d names: embedding again",
                    key, vectors.shape, n_names)  # fmt: skip
        return None
    return vectors


def save_vectors(key: str, vectors: np.ndarray, meta: dict, cache_dir: Path | None = None) -> Path:
    """Write the vectors under ``key`` (into a private folder, then renamed: a reader never
    sees half a file)."""
    dest = index_dir(key, cache_dir)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=dest.parent))
    np.save(tmp / VECTORS, vectors)
    (tmp / META).write_text(json.dumps(meta, indent=2, sort_keys=True))
    try:
        os.replace(tmp, dest)
    except OSError:  # another run wrote it first: theirs is the same
        shutil.rmtree(tmp, ignore_errors=True)
        if not (dest / VECTORS).exists():
            raise
    return dest
