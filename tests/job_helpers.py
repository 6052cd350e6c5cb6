"""Running the real ``python -m jobs.annotate`` from tests, and reading its tables."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa

from pipeline.storage import files as storage

ROOT = Path(__file__).resolve().parents[1]


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
