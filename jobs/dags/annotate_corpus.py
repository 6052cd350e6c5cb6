"""Nightly annotate run on a Ray cluster, submitted through the Ray job API.

Where things come from (never from this file):

* cluster: Airflow connection ``ray_default``: ``host`` (``http://head``, or a bare host
  with ``port``) or extra ``address``; ``password`` = the cluster's auth token when it runs
  with ``RAY_AUTH_MODE=token``; extra ``runtime_env`` (dict), e.g. a ``working_dir`` or
  ``py_modules`` when the cluster's image lacks this project; extra ``verify`` (TLS).
* inputs of scheduled runs: Variables ``annotate_input_uri`` and ``annotate_output_root``,
  and the models: Variables ``annotate_ner_model`` and/or ``annotate_embed_model``; a manual
  run may pass ``input_uri`` / ``output_uri`` / ``ner_model`` / ``embed_model`` and the other
  params as conf (a param wins over its Variable).

The output of a run defaults to ``<output_root>/<logical date>``, so rerunning a date
resumes the same output (the job skips shards already committed).

A retry of a task attaches to the Ray job the earlier try submitted (see
``pipeline.orchestrate.submit``). Killing the task (mark failed, timeout, worker shutdown) stops the
Ray job through ``on_kill``, which only operators have, hence the small operator below.

Importing this file loads neither Ray nor torch: the DAG processor parses it often.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

from airflow.sdk import BaseOperator, Connection, Context, Param, Variable, dag

CONN_ID = "ray_default"
SUMMARY_KEYS = (
    "fingerprint",
    "shards",
    "rows",
    "documents_by_status",
    "entities_by_label",
    "this_run",
)


class RayJobError(Exception):
    """The Ray job ended in a state other than SUCCEEDED."""


def _cluster(conn_id: str) -> tuple[str, str | None, dict[str, Any], bool | str]:
    """Address, token, runtime env and TLS verification from the Airflow connection."""
    from pipeline.orchestrate.submit import dashboard_address

    conn = Connection.get(conn_id)
    extra = conn.extra_dejson
    address = extra.get("address") or dashboard_address(
        conn.host or "127.0.0.1", conn.port, extra.get("scheme", "http")
    )
    return (
        address,
        conn.password or None,
        dict(extra.get("runtime_env") or {}),
        extra.get("verify", True),
    )


def _run_date(context: Context) -> str:
    """The logical date (or, for runs without one, the run-after date) as YYYY-MM-DD."""
    when = context.get("logical_date") or context["dag_run"].run_after
    return when.date().isoformat()


def job_options(
    params: dict[str, Any], run_date: str, variable: Callable[..., Any]
) -> dict[str, Any]:
    """The job's flags from the run's params, falling back to Variables; fails before submitting.

    ``variable`` is ``Variable.get`` (called as ``variable(key, default=None)``).
    """
    from pipeline.storage import files as storage

    def pick(param: str, var: str) -> Any:
        return params.get(param) or variable(var, default=None)

    input_uri = pick("input_uri", "annotate_input_uri")
    if not input_uri:
        raise ValueError("no input: set param input_uri or Variable annotate_input_uri")
    output_uri = params.get("output_uri")
    if not output_uri:
        root = variable("annotate_output_root", default=None)
        if not root:
            raise ValueError("no output: set param output_uri or Variable annotate_output_root")
        output_uri = storage.join(root, run_date)
    ner_model = pick("ner_model", "annotate_ner_model")
    embed_model = pick("embed_model", "annotate_embed_model")
    if not (ner_model or embed_model):
        raise ValueError(
            "no model: set param ner_model and/or embed_model, "
            "or Variable annotate_ner_model and/or annotate_embed_model"
        )
    return {
        "input": input_uri,
        "output": output_uri,
        "ner_model": ner_model,
        "embed_model": embed_model,
        **(params.get("job_options") or {}),
    }


class RayAnnotateOperator(BaseOperator):
    """Submit (or reattach to) ``python -m jobs.annotate`` on Ray, follow it, summarise it."""

    def __init__(self, *, conn_id: str = CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self._client: Any = None
        self._submission_id: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from pipeline.orchestrate import submit
        from pipeline.schemas import RUN_JSON
        from pipeline.storage import files as storage

        params = context["params"]
        options = job_options(params, _run_date(context), Variable.get)
        output_uri = options["output"]
        address, token, runtime_env, verify = _cluster(self.conn_id)
        runtime_env.update(params.get("runtime_env") or {})
        self._client = submit.job_client(address, token=token, verify=verify)
        dag_run = context["dag_run"]
        base_id = submit.submission_id_for(dag_run.dag_id, dag_run.run_id)
        self._submission_id = submit.submit_or_attach(
            self._client,
            base_id,
            submit.build_entrypoint(options),
            runtime_env,
            metadata={"airflow_dag_id": dag_run.dag_id, "airflow_run_id": dag_run.run_id},
        )
        self.log.info("following Ray job %s at %s", self._submission_id, address)
        outcome = submit.wait_for_job(
            self._client,
            self._submission_id,
            poll_s=float(params.get("poll_seconds") or 15),
            log_tail_lines=int(params.get("log_tail_lines", 50)),
            on_log=lambda line: self.log.info("[ray] %s", line),
        )
        if not outcome.succeeded:
            raise RayJobError(
                f"Ray job {outcome.submission_id} ended {outcome.status}: {outcome.message}"
            )
        run = storage.read_json(storage.join(output_uri, RUN_JSON))
        summary = {k: run.get(k) for k in SUMMARY_KEYS}
        summary.update(output_uri=output_uri, submission_id=outcome.submission_id)
        return summary

    def on_kill(self) -> None:
        # Called from Airflow's SIGTERM handler, and on execution_timeout, in this process.
        if self._client is not None and self._submission_id is not None:
            from pipeline.orchestrate.submit import stop_job

            stop_job(self._client, self._submission_id)


@dag(
    dag_id="annotate_corpus",
    schedule="0 2 * * *",
    start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC),
    catchup=False,
    max_active_runs=1,
    tags=["ray", "nlp"],
    # The delay between tries is [core] default_task_retry_delay (300 s unless configured).
    default_args={"retries": 1},
    params={
        "input_uri": Param(None, type=["null", "string"], description="Parquet file or prefix"),
        "output_uri": Param(
            None,
            type=["null", "string"],
            description="default: Variable annotate_output_root / logical date (YYYY-MM-DD)",
        ),
        "ner_model": Param(
            None,
            type=["null", "string"],
            description="NER model; default: Variable annotate_ner_model",
        ),
        "embed_model": Param(
            None,
            type=["null", "string"],
            description="embedding model; default: Variable annotate_embed_model",
        ),
        "job_options": Param(
            {}, type="object", description='more job flags, e.g. {"batch_tokens": 8192}'
        ),
        "runtime_env": Param({}, type="object", description="merged over the connection's"),
        "log_tail_lines": Param(50, type="integer", minimum=0, description="lines per poll"),
        "poll_seconds": Param(15, type="number", minimum=0.5, description="job status polling"),
    },
)
def annotate_corpus() -> None:
    RayAnnotateOperator(task_id="annotate", execution_timeout=dt.timedelta(hours=12))


annotate_corpus()
