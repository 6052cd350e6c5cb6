"""Batch NER and embeddings with biomedical encoders on Ray Data.

The whole job is one call: ``annotate(AnnotateConfig(...), Scheduling(...))``.
"""

from __future__ import annotations

import importlib
from typing import Any

# Loaded on first use, so that importing a pure core module (``pipeline.core.windows``) does
# not import Ray and torch, which workers and the GPU machine may not need or have.
_EXPORTS = {
    "AnnotateConfig": "pipeline.config",
    "ModelSpec": "pipeline.config",
    "Scheduling": "pipeline.config",
    "InputError": "pipeline.types",
    "AnnotateResult": "pipeline.run",
    "annotate": "pipeline.run",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
