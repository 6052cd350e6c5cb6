"""The link index of a run: its dictionary's name vectors from the node's cache, or
embedded on the run's actor pool (a Ray Data pass over the names) and cached, with the
n-gram index built beside them; put once in the object store for every link actor."""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np
import pyarrow as pa
import ray

from pipeline.config import AnnotateConfig, EmbedSettings, EncoderScheduling, Scheduling
from pipeline.execution import sizing
from pipeline.linking import index as cache
from pipeline.stages.link import NAME_INDEX, NAME_VECTOR, NameVectors
from pipeline.types import RunPlan

log = logging.getLogger(__name__)

NAMES_PER_BLOCK = 8192


def link_settings(rp: RunPlan, cfg: AnnotateConfig) -> EmbedSettings:
    info = rp.models["link"]
    return EmbedSettings(
        model_dir=info.local_dir,
        max_length=info.max_length,
        stride=rp.stride["link"],
        dtype=cfg.dtype,
        trust_remote_code=cfg.link.trust_remote_code if cfg.link else False,
        allow_pickle=cfg.allow_pickle,
        pooling=info.pooling or "mean",
        normalize=True,
    )


def _embed_names(
    rp: RunPlan, cfg: AnnotateConfig, sched: Scheduling, budget: int, cluster: dict[str, float]
) -> np.ndarray:
    assert rp.dictionary is not None
    names = rp.dictionary.names
    n_actors, resources, threads = sizing.actor_args(sched, 1, cluster)
    blocks = [
        pa.table({NAME_INDEX: pa.array(np.arange(a, min(a + NAMES_PER_BLOCK, len(names)))),
                  "name": pa.array(names[a : a + NAMES_PER_BLOCK], pa.string())})
        for a in range(0, len(names), NAMES_PER_BLOCK)
    ]  # fmt: skip
    ds = ray.data.from_arrow(blocks).map_batches(
        NameVectors,
        fn_constructor_kwargs={
            "settings": link_settings(rp, cfg),
            "sched": EncoderScheduling(budget, threads, sched.compile_model),
        },
        compute=ray.data.ActorPoolStrategy(size=n_actors),
        batch_size=NAMES_PER_BLOCK,
        batch_format="pyarrow",
        **resources,
    )
    dim = None
    out: np.ndarray | None = None
    for batch in ds.iter_batches(batch_format="pyarrow", batch_size=None):
        vectors = batch.column(NAME_VECTOR).combine_chunks()
        dim = dim or vectors.type.list_size
        if out is None:
            out = np.zeros((len(names), dim), np.float16)
        flat = vectors.values.to_numpy(zero_copy_only=False).reshape(-1, dim)
        out[batch.column(NAME_INDEX).to_numpy()] = flat
    assert out is not None
    return out


def build(
    rp: RunPlan, cfg: AnnotateConfig, sched: Scheduling, budget: int, cluster: dict[str, float]
) -> tuple[Any, dict[str, Any]]:
    """The run's index in the object store (a ref in a list, so that Ray hands it to the
    actors as it is), and what run.json reports of it."""
    from pipeline.linking.retrieval import LinkIndex  # scikit-learn: only runs that link

    assert rp.dictionary is not None
    t0 = time.monotonic()
    key = cache.index_key(rp.dictionary, rp.models["link"])
    vectors = cache.load_vectors(key, len(rp.dictionary))
    hit = vectors is not None
    if vectors is None:
        log.info("link index: embedding %d names (cached afterwards)", len(rp.dictionary))
        vectors = _embed_names(rp, cfg, sched, budget, cluster)
        cache.save_vectors(key, vectors, {"names": len(vectors), "dim": vectors.shape[1],
                                          "dtype": str(vectors.dtype)})  # fmt: skip
    embedded = time.monotonic()
    index = LinkIndex.build(rp.dictionary, vectors)
    ref = ray.put(index)
    info = {
        "key": key,
        "cache_hit": hit,
        "names": len(vectors),
        "dim": int(vectors.shape[1]),
        "vector_dtype": str(vectors.dtype),
        "vector_bytes": int(vectors.nbytes),
        "ngram_bytes": int(index.ngrams.data.nbytes + index.ngrams.indices.nbytes),
        "embed_seconds": round(embedded - t0, 2),
        "ngram_seconds": round(time.monotonic() - embedded, 2),
    }
    log.info("link index %s: %d names, %s", "from the cache" if hit else "built",
             len(vectors), f"{time.monotonic() - t0:.1f} s")  # fmt: skip
    return [ref], info
