"""Wiring: read → tokenize → NER → embed → entities (given spans, context) → link →
stage → commit, on Ray Data.

The caller has connected to Ray; nothing here calls ``ray.init``.
"""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

import ray

from pipeline import schemas as S
from pipeline.config import AnnotateConfig, EncoderScheduling, Scheduling
from pipeline.execution import given_spans, plan, sizing
from pipeline.execution import link_index as link_index_build
from pipeline.execution.declarations import encoder_stages
from pipeline.stages.entities import EntitySettings, EntityStage
from pipeline.stages.link import LinkSettings, LinkStage
from pipeline.stages.read import ReadSettings, read_shard
from pipeline.stages.tokenize import Tokenize
from pipeline.stages.write import StageWriter
from pipeline.storage import files as storage
from pipeline.storage.output import OutputFolder
from pipeline.storage.shards import StagedParts
from pipeline.types import RunPlan, RunResult, Shard

log = logging.getLogger(__name__)


def _read_shards(batch: dict[str, Any], settings: ReadSettings, out: OutputFolder):
    """Ray Data generator UDF: one input row per shard, many document batches out."""
    for shard, key in zip(batch["shard"], batch["key"]):
        try:
            yield from read_shard(str(shard), settings)
        except Exception as exc:  # the shard stays uncommitted; others go on
            out.record_failure(str(key), str(shard), exc)


def _blocks_of(ds: ray.data.Dataset, rows: int) -> ray.data.Dataset:
    """``ds`` re-cut, as it streams, into blocks of at most ``rows`` rows.

    The reader yields a shard's batches into one block, and a block is one task for each
    operator after it: without this the embedding actor waits for the NER actor to finish
    a whole shard (on a one-shard input, the whole run) and a task holds a whole shard.
    Ray's streaming repartition runs as 1-CPU tasks, which the CPUs reserved by the actor
    pools never leave room for, so it is given a light stage's share; a Ray without that
    hook keeps shard-sized blocks."""
    out = ds.repartition(target_num_rows_per_block=rows)
    remote_args = getattr(out._logical_plan.dag, "ray_remote_args", None)
    if not isinstance(remote_args, dict):
        return ds
    remote_args["num_cpus"] = sizing.LIGHT_CPUS
    return out


def build_dataset(
    rp: RunPlan,
    cfg: AnnotateConfig,
    sched: Scheduling,
    shards: list[Shard],
    per_batch: int,
    budgets: dict[str, int],
    cluster: dict[str, float],
) -> ray.data.Dataset:
    """The dataset that processes ``shards`` in Ray Data batches of ``per_batch``
    documents, each model's passes ``budgets[role]`` tokens, on a cluster with ``cluster``
    resources (``ray.cluster_resources()``)."""
    todo = [{"shard": s.uri, "key": s.key} for s in shards]
    n_models = len(rp.models)
    n_actors, resources, threads = sizing.actor_args(sched, n_models, cluster, rp.entity_stage)
    n_tokenizers = sizing.tokenizer_actors(sched, n_actors, int(cluster.get("GPU", 0)))
    settings = ReadSettings(cfg.id_column, cfg.text_column, cfg.max_chars, per_batch, rp.id_type)
    ds = ray.data.from_items(todo, override_num_blocks=max(1, len(todo)))
    ds = ds.map_batches(
        _read_shards,
        batch_size=1,
        fn_kwargs={"settings": settings, "out": OutputFolder(cfg.output_uri)},
        num_cpus=sizing.LIGHT_CPUS,
    )
    ds = _blocks_of(ds, per_batch)
    batch = {"batch_size": per_batch, "batch_format": "pyarrow"}
    for roles in plan.tokenizer_groups(rp.tokenizers):
        ds = ds.map_batches(
            Tokenize,
            fn_constructor_kwargs={"roles": roles, "tokenizer": rp.tokenizers[roles[0]]},
            compute=ray.data.ActorPoolStrategy(size=n_tokenizers),
            num_cpus=sizing.LIGHT_CPUS,
            **batch,
        )
    for decl in encoder_stages(rp, cfg):
        ds = ds.map_batches(
            decl.stage,
            fn_constructor_kwargs={
                "settings": decl.settings,
                "sched": EncoderScheduling(budgets[decl.role], threads, sched.compile_model),
            },
            compute=ray.data.ActorPoolStrategy(size=n_actors),  # restarts actors, retries
            **resources,
            **batch,
        )
    if rp.entity_stage:
        spans = OutputFolder(cfg.output_uri).given_spans() if rp.given_spans is not None else None
        ds = ds.map_batches(
            EntityStage,
            fn_constructor_kwargs={"settings": EntitySettings(rp.context, spans)},
            compute=ray.data.ActorPoolStrategy(size=n_tokenizers),
            num_cpus=sizing.LIGHT_CPUS,
            **batch,
        )
    if rp.linked:
        settings = LinkSettings(
            link_index_build.link_settings(rp, cfg),
            cfg.link_top_k,
            cfg.link_min_score,
            cfg.link_sparse_weight,
            cfg.link_abbreviations,
        )
        ds = ds.map_batches(
            LinkStage,
            fn_constructor_kwargs={
                "settings": settings,
                "sched": EncoderScheduling(budgets["link"], threads, sched.compile_model),
                "index": rp.link_index,
            },
            compute=ray.data.ActorPoolStrategy(size=n_actors),
            **resources,
            **batch,
        )
    token_role = "embed" if "embed" in rp.models else ("ner" if "ner" in rp.models else None)
    dim = rp.models["embed"].dim if "embed" in rp.models else None
    keys = {s.uri: s.key for s in rp.todo}
    return ds.map_batches(
        StageWriter,
        fn_constructor_kwargs={
            "out": OutputFolder(cfg.output_uri),
            "keys": keys,
            "token_role": token_role,
            "dim": dim,
        },
        compute=ray.data.ActorPoolStrategy(size=1),
        num_cpus=sizing.LIGHT_CPUS,
        **batch,
    )


def _describe(exc: BaseException) -> str:
    """The innermost cause's type and first line, without Ray's tracebacks."""
    for _ in range(20):  # Ray wraps task errors; Ray Data wraps those again
        inner = exc.cause if isinstance(exc, ray.exceptions.RayTaskError) else exc.__cause__
        if inner is None:
            break
        exc = inner
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500]


class _Publisher:
    """Publishes each shard on a Ray task as soon as all its parts are staged, and
    collects the commit records at the end."""

    def __init__(self, rp: RunPlan, out: OutputFolder, dtype: str) -> None:
        # Publishing only copies staged files, so retrying it after any error is safe.
        self._remote = ray.remote(num_cpus=0, max_retries=3, retry_exceptions=True)(
            OutputFolder.publish
        )
        self.out = out
        self.schemas = rp.output_schemas()
        self.keys = {s.uri: s.key for s in rp.todo}
        # The run's id in each commit record tells a retried publish what it already did;
        # each record also names the input file's version it was made from.
        meta = {"fingerprint": rp.fingerprint, "run": uuid.uuid4().hex, "dtype": dtype}
        self.meta = {s.uri: meta | {"input_version": s.version} for s in rp.todo}
        self.staged = StagedParts({s.uri: s.n_rows for s in rp.todo})
        self.pending: dict[ray.ObjectRef, str] = {}
        # Zero-row shards have nothing to stage: their empty tables go straight away.
        for s in rp.todo:
            if s.n_rows == 0:
                self._publish(s.uri, [])

    def _publish(self, shard: str, parts: list[str]) -> None:
        ref = self._remote.remote(
            self.out, self.keys[shard], shard, self.schemas, self.meta[shard], parts
        )
        self.pending[ref] = shard

    def staged_part(self, row: dict[str, Any], result: RunResult) -> None:
        """One writer summary row: count it once, publish its shard if it completed it."""
        new, parts = self.staged.add(row[S.SHARD], row["part"], row["n_docs"])
        if new:
            result.docs_processed += row["n_docs"]
            result.tokens_processed += row["n_tokens"]
        if parts is not None:
            self._publish(row[S.SHARD], parts)

    def collect(self, result: RunResult) -> None:
        for ref, shard in self.pending.items():
            try:
                record = ray.get(ref)
            except Exception as exc:  # this shard stays uncommitted; a rerun redoes it
                result.shards_failed[shard] = f"publish failed: {_describe(exc)}"
                continue
            result.records.append(record)
            result.shards_done.append(shard)
            log.info("committed shard %s (%s)", record["key"], record["rows"])


def _stream(
    rp: RunPlan, cfg: AnnotateConfig, sched: Scheduling, publisher: _Publisher, result: RunResult
) -> str:
    """Run the shards to do, as one dataset per group of shards; returns why the run
    stopped early, or "" when it did not."""
    cluster = ray.cluster_resources()
    per_batch = sizing.run_batch_size(rp, sched, cluster)
    budgets = sizing.run_batch_tokens(rp, cfg, sched, cluster)
    if rp.todo:
        result.docs_per_batch, result.batch_tokens = per_batch, budgets
        log.info(
            "batches of %d documents; tokens per forward pass: %s", per_batch,
            ", ".join(f"{r} {n}" for r, n in budgets.items()),
        )  # fmt: skip
    if rp.linked and rp.todo:
        rp.link_index, result.linking = link_index_build.build(
            rp, cfg, sched, budgets["link"], cluster
        )
    groups = plan.shard_groups(rp.todo, per_batch, sched.max_blocks_per_dataset)
    for i, group in enumerate(groups):
        if len(groups) > 1:
            log.info("dataset %d of %d: %d shards", i + 1, len(groups), len(group))
        ds = build_dataset(rp, cfg, sched, group, per_batch, budgets, cluster)
        try:
            for summary in ds.iter_batches(batch_format="pyarrow", batch_size=None):
                for row in summary.to_pylist():
                    publisher.staged_part(row, result)
        except Exception as exc:  # e.g. storage down past its retries: keep what is staged
            stopped = f"the run stopped: {_describe(exc)}"
            log.error("%s; shards already staged are still published", stopped)
            return stopped
    return ""


def run(rp: RunPlan, cfg: AnnotateConfig, sched: Scheduling) -> RunResult:
    """Process every shard still to do, publishing each as soon as all its rows are staged."""
    t0 = time.monotonic()
    result = RunResult(shards_skipped=[s.uri for s in rp.skipped])
    result.shards_failed.update(rp.failed)
    out = OutputFolder(cfg.output_uri)
    # Failure records of earlier runs: a shard that fails again gets a fresh one.
    out.forget_failures({s.key for s in rp.todo})
    if rp.given_spans is not None and rp.todo:
        storage.write_parquet_table(out.given_spans(), given_spans.attachable(rp.given_spans))
    publisher = _Publisher(rp, out, sizing.resolved_dtype(cfg.dtype, ray.cluster_resources()))
    stopped = _stream(rp, cfg, sched, publisher, result)
    publisher.collect(result)
    for s in rp.todo:
        if s.uri not in result.shards_done and s.uri not in result.shards_failed:
            got = publisher.staged.staged_docs(s.uri)
            result.shards_failed[s.uri] = (
                out.failure(s.key)
                or stopped
                or f"incomplete: {got} of {s.n_rows} rows were processed"
            )
    if not result.shards_failed:
        out.clear_staging()
    result.wall_s = time.monotonic() - t0
    return result
