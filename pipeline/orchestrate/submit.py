"""Submit a job to a Ray cluster's job API, reattach to it, follow it, stop it.

Used by the Airflow DAG, but free of Airflow so that it is tested against a real Ray head
alone. Ray is imported only inside :func:`job_client`, so importing this module is cheap.

Retries are idempotent: the submission id derives from the orchestrator's run, so a retry
finds the job its earlier attempt submitted and follows it instead of starting a second
one. Only a job that ended FAILED or STOPPED is submitted again, under ``<id>-try<n>``.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shlex
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

log = logging.getLogger(__name__)

ATTACHABLE = frozenset({"PENDING", "RUNNING", "SUCCEEDED"})
TERMINAL = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
MAX_ID_CHARS = 100
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_TRY = re.compile(r"^(?P<base>.+)-try(?P<n>[0-9]+)$")


@dataclass(frozen=True)
class JobOutcome:
    """How a job ended: Ray's status name, its message, and the last lines of its log."""

    submission_id: str
    status: str
    message: str | None
    log_tail: list[str] = field(default_factory=list)

    @property
    def succeeded(self) -> bool:
        return self.status == "SUCCEEDED"


def auth_headers(token: str | None) -> dict[str, str]:
    """HTTP headers for a cluster started with ``RAY_AUTH_MODE=token``; empty without a token.

    Ray's client adds its own header only when this process runs in token mode and finds a
    token (``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or ``~/.ray/auth_token``); an
    explicit ``Authorization`` header takes precedence over that lookup.
    """
    return {"Authorization": f"Bearer {token}"} if token else {}


def job_client(address: str, token: str | None = None, verify: bool | str = True) -> Any:
    """A ``JobSubmissionClient`` for the dashboard at ``address`` (``http://host:8265``).

    The token travels only in the request header; it is never logged here.
    """
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(address, headers=auth_headers(token), verify=verify)


def dashboard_address(host: str, port: int | None = None, scheme: str = "http") -> str:
    """``scheme://host:port`` from connection parts; a host that has a scheme is kept."""
    if "://" in host:
        base = host.rstrip("/")
    else:
        base = f"{scheme}://{host}"
    return f"{base}:{port}" if port else base


def submission_id_for(dag_id: str, run_id: str) -> str:
    """A deterministic submission id for one orchestrator run, in ``[A-Za-z0-9_-]``.

    Unsafe characters become ``-``; a hash of the raw pair keeps ids of runs that differ
    only in those characters apart. At most ``MAX_ID_CHARS`` characters.
    """
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()[:10]
    readable = _UNSAFE.sub("-", f"{dag_id}-{run_id}").strip("-")
    return f"{readable[: MAX_ID_CHARS - len(digest) - 1]}-{digest}"


def build_entrypoint(options: Mapping[str, Any], module: str = "jobs.annotate") -> str:
    """``python -m <module> --flag value ...`` with every value shell-quoted.

    Keys become flags (``embed_model`` → ``--embed-model``). ``True`` gives a bare flag;
    ``False`` and ``None`` leave the flag out; lists repeat the flag once per value.
    """
    parts = ["python", "-m", module]
    for key, value in options.items():
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", key):
            raise ValueError(f"invalid option name: {key!r}")
        flag = "--" + key.replace("_", "-")
        if value is None or value is False:
            continue
        if value is True:
            parts.append(flag)
        elif isinstance(value, list | tuple):
            for item in value:
                parts += [flag, str(item)]
        elif isinstance(value, str | int | float):
            parts += [flag, str(value)]
        else:
            raise TypeError(f"option {key!r} has unsupported type {type(value).__name__}")
    return shlex.join(parts)


def _attempts(client: JobSubmissionClient, submission_id: str) -> dict[int, str]:
    """Status of every attempt of ``submission_id`` on the cluster, by attempt number."""
    attempts: dict[int, str] = {}
    for job in client.list_jobs():
        sid = job.submission_id or ""
        if sid == submission_id:
            attempts[1] = str(job.status)
        elif (m := _TRY.match(sid)) and m["base"] == submission_id:
            attempts[int(m["n"])] = str(job.status)
    return attempts


def submit_or_attach(
    client: JobSubmissionClient,
    submission_id: str,
    entrypoint: str,
    runtime_env: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> str:
    """Submit the job, or attach to the attempt an earlier try already made; return its id.

    The latest attempt decides: PENDING, RUNNING or SUCCEEDED is attached to (a retry
    never runs the job twice); FAILED or STOPPED starts ``<id>-try<n+1>``; none starts
    ``<id>``.
    """
    for _ in range(3):
        attempts = _attempts(client, submission_id)
        if attempts:
            latest = max(attempts)
            latest_id = submission_id if latest == 1 else f"{submission_id}-try{latest}"
            if attempts[latest] in ATTACHABLE:
                log.info("attaching to job %s (%s)", latest_id, attempts[latest])
                return latest_id
            target = f"{submission_id}-try{latest + 1}"
            log.info(
                "job %s ended %s; submitting a new attempt %s",
                latest_id,
                attempts[latest],
                target,
            )
        else:
            target = submission_id
        try:
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=target,
                runtime_env=dict(runtime_env or {}),
                metadata=dict(metadata or {}),
            )
            log.info("submitted job %s", target)
            return target
        except RuntimeError as exc:
            # Another submitter took this id between our listing and our submit: look again.
            if "already" not in str(exc):
                raise
    raise RuntimeError(f"could not submit or attach to job {submission_id}")


def _new_lines(logs: str, seen_chars: int) -> tuple[list[str], int]:
    """Complete lines of ``logs`` after character ``seen_chars``, and the new position."""
    end = logs.rfind("\n") + 1
    if end <= seen_chars:
        return [], seen_chars
    return logs[seen_chars:end].splitlines(), end


def wait_for_job(
    client: JobSubmissionClient,
    submission_id: str,
    poll_s: float = 10.0,
    log_tail_lines: int = 50,
    on_log: Callable[[str], None] | None = None,
    timeout_s: float | None = None,
) -> JobOutcome:
    """Poll until the job is terminal; pass new log lines to ``on_log`` as they appear.

    At most ``log_tail_lines`` lines are passed on per poll (the latest ones), so a chatty
    job cannot flood the caller's log. Raises ``TimeoutError`` after ``timeout_s`` seconds;
    the job keeps running then (see :func:`stop_job`).
    """
    deadline = None if timeout_s is None else time.monotonic() + timeout_s
    seen = 0
    tail: list[str] = []
    while True:
        info = client.get_job_info(submission_id)
        status = str(info.status)
        logs = client.get_job_logs(submission_id)
        if status in TERMINAL and logs and not logs.endswith("\n"):
            logs += "\n"  # the job is over: its last line is complete
        lines, seen = _new_lines(logs, seen)
        tail = (tail + lines)[-log_tail_lines:] if log_tail_lines > 0 else []
        if on_log is not None and lines:
            if len(lines) > log_tail_lines:
                on_log(f"[{len(lines) - log_tail_lines} log lines skipped]")
            for line in lines[-log_tail_lines:] if log_tail_lines > 0 else []:
                on_log(line)
        if status in TERMINAL:
            return JobOutcome(submission_id, status, info.message, tail)
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still {status} after {timeout_s} s")
        time.sleep(poll_s)


def stop_job(client: JobSubmissionClient, submission_id: str) -> bool:
    """Ask the cluster to stop the job (SIGTERM, then SIGKILL); True if it was running."""
    stopped = bool(client.stop_job(submission_id))
    log.info(
        "stop requested for job %s: %s", submission_id, "stopping" if stopped else "not running"
    )
    return stopped
