"""The encoder stages of a run, declared: which callable class Ray Data runs for each
model role, with the frozen settings the run's config and plan give it. Building the
graph is a loop over these; a new encoder task is one more entry in ``ENCODERS``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.config import AnnotateConfig, EmbedSettings, EncoderSettings, NerSettings
from pipeline.models.loading import ModelInfo
from pipeline.stages.embed import EmbedStage
from pipeline.stages.ner import NerStage
from pipeline.types import RunPlan


@dataclass(frozen=True)
class EncoderStage:
    role: str  # the model role: "ner", "embed"
    stage: type  # a callable class: __init__(settings, sched), __call__(pa.Table)
    settings: EncoderSettings


def _ner(cfg: AnnotateConfig, info: ModelInfo, common: dict[str, Any]) -> EncoderStage:
    settings = NerSettings(**common, aggregation=cfg.aggregation, decoding=cfg.decoding)
    return EncoderStage("ner", NerStage, settings)


def _embed(cfg: AnnotateConfig, info: ModelInfo, common: dict[str, Any]) -> EncoderStage:
    settings = EmbedSettings(**common, pooling=info.pooling, normalize=cfg.normalize)
    return EncoderStage("embed", EmbedStage, settings)


ENCODERS: dict[str, Callable[[AnnotateConfig, ModelInfo, dict[str, Any]], EncoderStage]] = {
    "ner": _ner,
    "embed": _embed,
}


def encoder_stages(rp: RunPlan, cfg: AnnotateConfig) -> list[EncoderStage]:
    """One declaration per document encoder of the plan, in graph order (the link model
    encodes mentions after the entity stage: ``pipeline.stages.link``)."""
    out = []
    for role, info in rp.models.items():
        if role not in ENCODERS:
            continue
        common = {
            "model_dir": info.local_dir,
            "max_length": info.max_length,
            "stride": rp.stride[role],
            "dtype": cfg.dtype,
            "trust_remote_code": getattr(cfg, role).trust_remote_code,
            "allow_pickle": cfg.allow_pickle,
        }
        out.append(ENCODERS[role](cfg, info, common))
    return out
