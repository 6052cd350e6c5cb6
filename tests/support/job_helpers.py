"""Running the real ``python -m jobs.annotate`` from tests, and reading its tables."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from pipeline.storage import files as storage
from support.ray_cluster import kill_session

ROOT = Path(__file__).resolve().parents[2]


def run_job(*args: str, env: dict[str, str] | None = None, timeout: int = 600):
    """Run the annotate job as users do; returns the CompletedProcess (text output)."""
    full_env = {**os.environ, **(env or {})}
    full_env.setdefault("RAY_DEDUP_LOGS", "0")
    return subprocess.run(
        [sys.executable, "-m", "jobs.annotate", *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def read_table(output: str, name: str) -> pa.Table:
    return storage.read_parquet_table(storage.join(output, name))


def read_run(output: str) -> dict:
    return json.loads(json.dumps(storage.read_json(storage.join(output, "run.json"))))


# Ray's own start-up gives its raylet 30 s to register; on a loaded machine it
# sometimes does not, before the job has done anything. Such a run is started again.
RAY_START_FAILED = "The current node timed out during startup"


def start_job(args: list[str], logs: Path, env: dict[str, str] | None = None):
    """Start the CLI in its own session; stdout and stderr go to files under ``logs``."""
    logs.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "RAY_DEDUP_LOGS": "0", **(env or {})}
    with open(logs / "stdout", "wb") as out, open(logs / "stderr", "wb") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "jobs.annotate", *args],
            cwd=ROOT,
            env=full_env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )


def end_session(proc: subprocess.Popen) -> None:
    """Kill the job if it still runs, and whatever it started (Ray's processes too)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
    kill_session(proc.pid)


def run_in_session(
    args: list[str], logs: Path, env: dict[str, str] | None = None, timeout_s: float = 600
) -> int | None:
    """Run the job in its own session (again, if Ray itself failed to start); return its
    exit status, or None if it ran past ``timeout_s``. Nothing it started is left."""
    for _ in range(2):
        proc = start_job(args, logs, env)
        try:
            rc = proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            rc = None
        finally:
            end_session(proc)
        if rc == 0 or RAY_START_FAILED not in tail(logs):
            break
    return rc


def tail(logs: Path, chars: int = 3000) -> str:
    return (logs / "stderr").read_text(errors="replace")[-chars:]
