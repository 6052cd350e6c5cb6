"""pipeline.orchestrate.submit against a real local Ray head, and `ray job submit` beside it."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from support.ray_head import RAY_BIN, RayHead, start_ray_head

from pipeline.orchestrate import submit

REPO = Path(__file__).resolve().parents[2]
ANNOTATE = REPO / "jobs" / "annotate.py"


# Pure helpers: no cluster.


def test_submission_id_is_deterministic_and_ray_safe() -> None:
    a = submit.submission_id_for("annotate_corpus", "scheduled__2026-11-25T00:00:00+00:00")
    assert a == submit.submission_id_for("annotate_corpus", "scheduled__2026-11-25T00:00:00+00:00")
    assert set(a) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
    assert a.startswith("annotate_corpus-scheduled__2026-11-25T00-00-00-00-00")
    # Runs that differ only in characters that get replaced must not collide.
    assert a != submit.submission_id_for("annotate_corpus", "scheduled__2026-11-25T00:00:00-00:00")
    assert a != submit.submission_id_for("annotate_corpus", "scheduled__2026-11-26T00:00:00+00:00")
    long_id = submit.submission_id_for("d" * 300, "r" * 300)
    assert len(long_id) <= submit.MAX_ID_CHARS


def test_build_entrypoint_quotes_every_value() -> None:
    tricky = "s3://bucket/a b/it's; rm -rf ~ $(x)"
    cmd = submit.build_entrypoint(
        {
            "input": tricky,
            "output": "/tmp/o",
            "embed_model": "m",
            "verbose": True,
            "ner_model": None,
        }
    )
    argv = shlex.split(cmd)
    assert argv == ["python", "-m", "jobs.annotate", "--input", tricky, "--output", "/tmp/o"] + [
        "--embed-model",
        "m",
        "--verbose",
    ]
    with pytest.raises(ValueError):
        submit.build_entrypoint({"input; rm": "x"})


@pytest.mark.skipif(not ANNOTATE.exists(), reason="jobs/annotate.py not written yet")
def test_build_entrypoint_parses_with_the_annotate_cli() -> None:
    from jobs.annotate import build_parser

    cmd = submit.build_entrypoint(
        {"input": "s3://b/in put", "output": "/o", "embed_model": "/m", "stride": 64}
    )
    args = build_parser().parse_args(shlex.split(cmd)[3:])
    assert (args.input, args.output, args.embed_model, args.stride) == (
        "s3://b/in put",
        "/o",
        "/m",
        64,
    )


def test_dashboard_address() -> None:
    assert submit.dashboard_address("10.0.0.5", 8265) == "http://10.0.0.5:8265"
    assert submit.dashboard_address("https://ray.example/", None) == "https://ray.example"
    assert submit.auth_headers(None) == {}
    assert submit.auth_headers("t") == {"Authorization": "Bearer t"}


# A real head.


@pytest.fixture(scope="class")
def head() -> Iterator[RayHead]:
    h = start_ray_head("disabled")
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture(scope="class")
def token_head() -> Iterator[RayHead]:
    h = start_ray_head("token")
    try:
        yield h
    finally:
        h.stop()


@pytest.fixture
def hello_dir(tmp_path: Path) -> Path:
    """A working dir whose script prints a file that exists only in that dir."""
    (tmp_path / "payload.txt").write_text("payload-7f3a\n")
    (tmp_path / "hello_job.py").write_text(
        "from pathlib import Path\nprint('hello from', Path('payload.txt').read_text().strip())\n"
    )
    return tmp_path


def _cli(head: RayHead, args: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    run_env = {**os.environ, **(env if env is not None else head.client_env)}
    proc = subprocess.run(
        [str(RAY_BIN), "job", "submit", "--address", head.dashboard_url, *args],
        cwd=cwd,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if proc.returncode != 0:
        raise AssertionError(f"ray job submit failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return proc.stdout


def _new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.mark.slow
class TestDisabledAuthHead:
    """One head without auth for these tests; stopped before the token-mode head starts."""

    def test_cli_submit_with_working_dir(self, head: RayHead, hello_dir: Path) -> None:
        sid = _new_id("cli")
        out = _cli(
            head,
            ["--submission-id", sid, "--working-dir", ".", "--", "python", "hello_job.py"],
            cwd=hello_dir,
        )
        assert "hello from payload-7f3a" in out
        client = submit.job_client(head.dashboard_url)
        assert str(client.get_job_status(sid)) == "SUCCEEDED"
        assert "hello from payload-7f3a" in client.get_job_logs(sid)

    def test_library_submit_and_wait_streams_logs(self, head: RayHead, hello_dir: Path) -> None:
        client = submit.job_client(head.dashboard_url)
        sid = submit.submit_or_attach(
            client, _new_id("lib"), "python hello_job.py", {"working_dir": str(hello_dir)}
        )
        lines: list[str] = []
        outcome = submit.wait_for_job(client, sid, poll_s=0.5, on_log=lines.append)
        assert outcome.succeeded, outcome
        assert "hello from payload-7f3a" in lines
        assert "hello from payload-7f3a" in outcome.log_tail

    def test_failed_job_reports_message_and_retry_submits_fresh(self, head: RayHead) -> None:
        client = submit.job_client(head.dashboard_url)
        base = _new_id("fail")
        failing = f"{sys.executable} -c \"print('about to fail'); raise SystemExit(3)\""
        assert submit.submit_or_attach(client, base, failing) == base
        outcome = submit.wait_for_job(client, base, poll_s=0.5)
        assert outcome.status == "FAILED"
        assert "exit code 3" in (outcome.message or "")
        assert "about to fail" in outcome.log_tail
        # A retry of the same run must not reuse the failed job: it submits <id>-try2.
        retry = submit.submit_or_attach(client, base, f"{sys.executable} -c \"print('second')\"")
        assert retry == f"{base}-try2"
        assert submit.wait_for_job(client, retry, poll_s=0.5).succeeded
        # ...and a third call attaches to the succeeded second attempt instead of running it again.
        assert submit.submit_or_attach(client, base, failing) == retry

    def test_second_submit_attaches_and_stop_stops(self, head: RayHead) -> None:
        client = submit.job_client(head.dashboard_url)
        base = _new_id("attach")
        sleeper = f"{sys.executable} -c \"import time; print('sleeping'); time.sleep(120)\""
        first = submit.submit_or_attach(client, base, sleeper)
        second = submit.submit_or_attach(client, base, sleeper)
        assert first == second == base
        ids = [
            j.submission_id for j in client.list_jobs() if (j.submission_id or "").startswith(base)
        ]
        assert ids == [base]
        assert submit.stop_job(client, base)
        assert submit.wait_for_job(client, base, poll_s=0.5, timeout_s=60).status == "STOPPED"
        again = submit.submit_or_attach(client, base, sleeper)
        assert again == f"{base}-try2"
        submit.stop_job(client, again)
        assert submit.wait_for_job(client, again, poll_s=0.5, timeout_s=60).status == "STOPPED"

    @pytest.mark.skipif(not ANNOTATE.exists(), reason="jobs/annotate.py not written yet")
    def test_annotate_job_through_ray_job_submit(self, head: RayHead, tmp_path: Path) -> None:
        from pipeline import schemas as S
        from pipeline.sample import corpus as sample_corpus
        from pipeline.sample import defaults
        from pipeline.storage import files as storage

        corpus = sample_corpus.write_sample_corpus(
            str(tmp_path / "corpus"), n_shards=2, n_notes=4, n_abstracts=2
        )
        n_docs = storage.read_parquet_table(corpus["docs"]).num_rows
        out_uri = str(tmp_path / "out")
        sid = _new_id("annotate")
        _cli(
            head,
            ["--submission-id", sid, "--working-dir", ".", "--"]
            + ["python", "-m", "jobs.annotate", "--input", corpus["docs"], "--output", out_uri]
            + ["--embed-model", defaults.default_embed_model()],
            cwd=REPO,
        )
        run = storage.read_json(storage.join(out_uri, S.RUN_JSON))
        assert run["shards"]["failed"] == 0
        input_ids = set(storage.read_parquet_table(corpus["docs"])[S.DOC_ID].to_pylist())
        docs = storage.read_parquet_table(storage.join(out_uri, S.DOCUMENTS_DIR)).to_pylist()
        assert {d[S.DOC_ID] for d in docs} == input_ids and len(docs) == n_docs
        ok = [d for d in docs if d[S.STATUS] == S.STATUS_OK]
        assert ok
        emb = storage.read_parquet_table(storage.join(out_uri, S.EMBEDDINGS_DIR))
        assert set(emb[S.DOC_ID].to_pylist()) == {d[S.DOC_ID] for d in ok}
        assert emb.num_rows == sum(d[S.N_CHUNKS] for d in ok)


@pytest.mark.slow
class TestTokenAuthHead:
    def test_token_mode_needs_the_token(self, token_head: RayHead, hello_dir: Path) -> None:
        assert token_head.token
        url = f"{token_head.dashboard_url}/api/jobs/"
        assert requests.get(url, timeout=10).status_code == 401
        bad = {"Authorization": "Bearer not-the-token"}
        assert requests.get(url, headers=bad, timeout=10).status_code == 403
        # The CLI finds the token in RAY_AUTH_TOKEN (or $HOME/.ray/auth_token) in token mode.
        sid = _new_id("tok-cli")
        out = _cli(
            token_head,
            ["--submission-id", sid, "--working-dir", ".", "--", "python", "hello_job.py"],
            cwd=hello_dir,
        )
        assert "hello from payload-7f3a" in out
        # Without auth the CLI is refused.
        with pytest.raises(AssertionError, match="failed"):
            _cli(
                token_head,
                ["--", "python", "-c", "print(1)"],
                cwd=hello_dir,
                env={"RAY_AUTH_MODE": "disabled", "HOME": str(hello_dir)},
            )
        # The library takes the token explicitly, as the DAG passes it from a connection.
        client = submit.job_client(token_head.dashboard_url, token=token_head.token)
        sid = submit.submit_or_attach(
            client, _new_id("tok-lib"), "python hello_job.py", {"working_dir": str(hello_dir)}
        )
        assert submit.wait_for_job(client, sid, poll_s=0.5).succeeded
