"""The annotate_corpus DAG under real Airflow (SQLite metadata DB) against a real Ray head.

Skipped when Airflow is not installed (it is the optional extra ``.[airflow]``).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import signal
import sqlite3
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from support.ray_head import RayHead, start_ray_head

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("airflow") is None, reason="Airflow not installed (.[airflow])"
)

REPO = Path(__file__).resolve().parents[2]
DAGS = REPO / "jobs" / "dags"
ANNOTATE = REPO / "jobs" / "annotate.py"
AIRFLOW = Path(sys.executable).with_name("airflow")
DAG_ID = "annotate_corpus"


def test_dag_file_imports_without_ray_or_torch() -> None:
    code = (
        "import sys; import jobs.dags.annotate_corpus as m; "
        "print(sorted(x for x in ('ray', 'torch', 'transformers', 'pyarrow') if x in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def _variables(values: dict[str, str]) -> object:
    """A stand-in for ``Variable.get`` over a dict (the real one needs a metadata DB)."""

    def get(key: str, default: object = None) -> object:
        return values.get(key, default)

    return get


def test_job_options_take_params_over_variables_and_need_a_model() -> None:
    from jobs.dags.annotate_corpus import job_options

    variables = {
        "annotate_input_uri": "s3://b/in/",
        "annotate_output_root": "s3://b/out",
        "annotate_ner_model": "s3://b/models/ner",
    }
    opts = job_options({}, "2026-12-01", _variables(variables))
    assert opts["input"] == "s3://b/in/"
    assert opts["output"] == "s3://b/out/2026-12-01"
    assert (opts["ner_model"], opts["embed_model"]) == ("s3://b/models/ner", None)

    params = {"embed_model": "e", "ner_model": "n", "job_options": {"batch_tokens": 8192}}
    opts = job_options(params, "2026-12-01", _variables(variables))
    assert (opts["ner_model"], opts["embed_model"], opts["batch_tokens"]) == ("n", "e", 8192)

    del variables["annotate_ner_model"]
    with pytest.raises(ValueError, match="no model: set param ner_model"):
        job_options({}, "2026-12-01", _variables(variables))
    with pytest.raises(ValueError, match="no input"):
        job_options({"embed_model": "e"}, "2026-12-01", _variables({}))


class AirflowHome:
    """A fresh AIRFLOW_HOME with a migrated SQLite DB; runs the ``airflow`` CLI in it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.db = root / "airflow.db"
        self.env = {
            **os.environ,
            "AIRFLOW_HOME": str(root),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.db}",
            # The DAG retries once; the retry need not wait the production 300 s here.
            "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "1",
            "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        }
        for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
            self.env.pop(var, None)
        # The task's client must get its token from the connection, not from the env.
        self.env["RAY_AUTH_MODE"] = "disabled"

    def cli(
        self, *args: str, check: bool = True, timeout: float = 600
    ) -> subprocess.CompletedProcess:
        proc = subprocess.run(
            [str(AIRFLOW), *args], env=self.env, capture_output=True, text=True, timeout=timeout
        )
        if check and proc.returncode != 0:
            raise AssertionError(
                f"airflow {args[0]} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
            )
        return proc

    def dags_test(self, date: str, conf: dict) -> subprocess.CompletedProcess:
        return self.cli("dags", "test", DAG_ID, date, "-c", json.dumps(conf), check=False)

    def query(self, sql: str, *params: object) -> list[tuple]:
        with sqlite3.connect(self.db) as db:
            return db.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def head() -> Iterator[RayHead]:
    h = start_ray_head("token")
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="module")
def airflow_home(head: RayHead) -> Iterator[AirflowHome]:
    with tempfile.TemporaryDirectory(prefix="af", dir="/tmp") as root:
        home = AirflowHome(Path(root))
        home.cli("db", "migrate")
        port = head.dashboard_url.rsplit(":", 1)[1]
        home.cli(
            "connections", "add", "ray_default",
            "--conn-type", "generic",
            "--conn-host", "127.0.0.1",
            "--conn-port", port,
            "--conn-password", head.token or "",
        )  # fmt: skip
        yield home


def _dag_run_state(home: AirflowHome, date: str) -> str:
    rows = home.query(
        "SELECT state FROM dag_run WHERE dag_id = ? AND logical_date LIKE ?", DAG_ID, f"{date}%"
    )
    assert len(rows) == 1, rows
    return rows[0][0]


def _job_ids(head: RayHead) -> set[str]:
    from pipeline.orchestrate import submit

    client = submit.job_client(head.dashboard_url, token=head.token)
    return {j.submission_id for j in client.list_jobs() if j.submission_id}


@pytest.mark.slow
@pytest.mark.skipif(not ANNOTATE.exists(), reason="jobs/annotate.py not written yet")
def test_dag_runs_the_annotate_job(
    airflow_home: AirflowHome, head: RayHead, tmp_path: Path
) -> None:
    from pipeline import schemas as S
    from pipeline.sample import corpus as sample_corpus
    from pipeline.sample import defaults
    from pipeline.storage import files as storage

    corpus = sample_corpus.write_sample_corpus(
        str(tmp_path / "c"), n_shards=2, n_notes=4, n_abstracts=2
    )
    out_uri = str(tmp_path / "out")
    conf = {
        "input_uri": corpus["docs"],
        "output_uri": out_uri,
        "embed_model": defaults.default_embed_model(),
        "runtime_env": {"working_dir": str(REPO)},
        "poll_seconds": 1,
    }
    proc = airflow_home.dags_test("2026-11-20", conf)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    assert _dag_run_state(airflow_home, "2026-11-20") == "success"
    for table in (S.DOCUMENTS_DIR, S.EMBEDDINGS_DIR):
        assert storage.read_parquet_table(storage.join(out_uri, table)).num_rows > 0
    rows = airflow_home.query(
        "SELECT value FROM xcom WHERE dag_id = ? AND task_id = 'annotate' AND key = 'return_value'",
        DAG_ID,
    )
    assert len(rows) == 1
    summary = json.loads(rows[0][0])
    n_docs = storage.read_parquet_table(corpus["docs"]).num_rows
    assert summary["output_uri"] == out_uri
    assert sum(summary["documents_by_status"].values()) == n_docs
    assert summary["shards"]["failed"] == 0
    logs = proc.stdout + proc.stderr
    assert "[ray]" in logs  # the job's log reached the task log
    assert head.token and head.token not in logs


@pytest.mark.slow
def test_failing_job_fails_the_dag_run_after_a_fresh_retry(
    airflow_home: AirflowHome, head: RayHead, tmp_path: Path
) -> None:
    from pipeline.orchestrate import submit

    before = _job_ids(head)
    conf = {
        "input_uri": str(tmp_path / "no-such-corpus"),
        "output_uri": str(tmp_path / "out"),
        "embed_model": "unused",
        "runtime_env": {"working_dir": str(REPO)},
        "poll_seconds": 1,
        "job_options": {"mode": "overwrite"},
    }
    proc = airflow_home.dags_test("2026-11-21", conf)
    logs = proc.stdout + proc.stderr
    assert proc.returncode != 0, logs[-6000:]
    assert _dag_run_state(airflow_home, "2026-11-21") == "failed"
    assert "ended FAILED" in logs
    assert head.token and head.token not in logs
    # Two tries, two Ray jobs: the retry did not attach to the failed first job.
    new = sorted(_job_ids(head) - before)
    assert len(new) == 2 and new[1] == f"{new[0]}-try2", new
    client = submit.job_client(head.dashboard_url, token=head.token)
    assert {str(client.get_job_status(j)) for j in new} == {"FAILED"}


@pytest.mark.slow
def test_killing_the_task_stops_the_ray_job(
    airflow_home: AirflowHome, head: RayHead, tmp_path: Path
) -> None:
    from pipeline.orchestrate import submit

    # A stand-in for jobs.annotate that only sleeps: the working dir shadows the real one.
    stub = tmp_path / "stub"
    (stub / "jobs").mkdir(parents=True)
    (stub / "jobs" / "__init__.py").write_text("")
    (stub / "jobs" / "annotate.py").write_text(
        textwrap.dedent("""
        import time
        print("stub job started", flush=True)
        time.sleep(600)
        """)
    )
    # Input, output and model come from Variables here, as in scheduled runs.
    conf = {"runtime_env": {"working_dir": str(stub)}, "poll_seconds": 1}
    client = submit.job_client(head.dashboard_url, token=head.token)
    before = _job_ids(head)
    log_path = tmp_path / "dags_test.log"
    # A long retry delay: the task fails after the kill, and its retry must not start here.
    env = {
        **airflow_home.env,
        "AIRFLOW__CORE__DEFAULT_TASK_RETRY_DELAY": "600",
        "AIRFLOW_VAR_ANNOTATE_INPUT_URI": "s3://corpus/in",
        "AIRFLOW_VAR_ANNOTATE_OUTPUT_ROOT": "s3://corpus/out",
        "AIRFLOW_VAR_ANNOTATE_EMBED_MODEL": "s3://corpus/models/embed",
    }
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [str(AIRFLOW), "dags", "test", DAG_ID, "2026-11-22", "-c", json.dumps(conf)],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        job = None
        deadline = time.monotonic() + 300
        while job is None and time.monotonic() < deadline and proc.poll() is None:
            new = sorted(_job_ids(head) - before)
            if new and "stub job started" in client.get_job_logs(new[0]):
                job = new[0]
            time.sleep(1)
        assert job is not None, log_path.read_text()[-4000:]
        os.kill(proc.pid, signal.SIGTERM)  # what Airflow's supervisor sends to kill a task
        status = submit.wait_for_job(client, job, poll_s=1, timeout_s=60).status
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    logs = log_path.read_text()
    assert status == "STOPPED", logs[-4000:]
    assert f"stop requested for job {job}" in logs
    # The output defaults to <output_root>/<logical date>, so a rerun resumes it.
    argv = shlex.split(client.get_job_info(job).entrypoint)
    assert argv[argv.index("--input") + 1] == "s3://corpus/in"
    assert argv[argv.index("--output") + 1] == "s3://corpus/out/2026-11-22"
    assert argv[argv.index("--embed-model") + 1] == "s3://corpus/models/embed"
    assert sorted(_job_ids(head) - before) == [job]
