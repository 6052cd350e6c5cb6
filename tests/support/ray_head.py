"""A throwaway local Ray head for tests: started by ``ray start --block``, stopped by its pid.

The head runs in its own session (process group), so stopping it means signalling that
group: the ``ray start`` process, GCS, raylet, dashboard and the workers they spawned.
``ray stop`` is never used, since it would stop every Ray cluster on the machine.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from support.ray_cluster import session_pids

RAY_BIN = Path(sys.executable).with_name("ray")


STARTED = b"Ray runtime started."


def free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports that were free a moment ago (the head binds them soon after)."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class RayHead:
    """A running head: its dashboard address, auth settings, and the env clients need."""

    process: subprocess.Popen
    dashboard_url: str
    temp_dir: str
    home: str
    token: str | None = field(repr=False)
    client_env: dict[str, str] = field(default_factory=dict, repr=False)

    def stop(self, grace_s: float = 10.0, report: bool = True) -> None:
        """Stop ``ray start`` by its pid, then everything left in its session; remove files.

        Workers put themselves in their own process groups but stay in the session that
        ``start_new_session`` gave the head, so the session id finds them all.
        """
        if report and (self.process.poll() is not None or not self.api_answers()):
            # Died before the test ended: leave the evidence in the test's output.
            sys.stderr.write(f"Ray head broken (ray start exit: {self.process.returncode}):\n")
            sys.stderr.write(self.log_tail())
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # ray start shuts its children down
            try:
                self.process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        for pid in session_pids(self.process.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if self.process.poll() is None:
            self.process.wait(timeout=grace_s)
        shutil.rmtree(self.temp_dir, ignore_errors=True)
        shutil.rmtree(self.home, ignore_errors=True)

    def api_answers(self) -> bool:
        """Whether the job API answers now (any HTTP status counts)."""
        try:
            requests.get(f"{self.dashboard_url}/api/version", timeout=5)
            return True
        except requests.RequestException:
            return False

    def log_tail(self, chars: int = 3000) -> str:
        """The end of ``ray start``'s output and of the dashboard's error log."""
        parts = []
        logs = Path(self.temp_dir) / "session_latest" / "logs"
        for path in [Path(self.temp_dir) / "ray_start.log"] + sorted(logs.glob("dashboard.*")):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-chars:]}")
        return "\n".join(parts) + "\n"


def _wait_until_ready(head: RayHead, headers: dict[str, str], timeout_s: float) -> None:
    """Wait for ``ray start`` to report the node up, then for the job API.

    The dashboard answers before the raylet has registered, and ``ray start`` gives up on
    a raylet that takes over 30 s (a loaded machine), so the API alone proves nothing.
    """
    deadline = time.monotonic() + timeout_s
    log = Path(head.temp_dir) / "ray_start.log"
    last = "no startup message"
    while time.monotonic() < deadline:
        if head.process.poll() is not None:
            raise RuntimeError(f"ray start exited with code {head.process.returncode}")
        if STARTED in log.read_bytes():
            try:
                r = requests.get(f"{head.dashboard_url}/api/jobs/", headers=headers, timeout=5)
                if r.status_code == 200:
                    return
                last = f"HTTP {r.status_code}"
            except requests.RequestException as e:
                last = type(e).__name__
        time.sleep(0.5)
    raise TimeoutError(f"Ray head not ready within {timeout_s} s ({last})")


def start_ray_head(
    auth_mode: str = "disabled", num_cpus: int = 2, timeout_s: float = 180.0, attempts: int = 3
) -> RayHead:
    """Start a head on loopback with free ports and a short temp dir; retry failed starts.

    ``auth_mode`` is ``"disabled"`` or ``"token"``. In token mode a fresh token is handed
    to the head through ``RAY_AUTH_TOKEN`` and also written to ``$HOME/.ray/auth_token``
    of a temporary HOME, so CLI clients given ``client_env`` find it either way.
    """
    errors = []
    for _ in range(attempts):
        head, headers = _launch(auth_mode, num_cpus)
        try:
            _wait_until_ready(head, headers, timeout_s)
            return head
        except (RuntimeError, TimeoutError) as exc:
            errors.append(f"{exc}\n{head.log_tail()}")
            head.stop(report=False)
    raise RuntimeError("Ray head failed to start:\n" + "\n".join(errors))


def _launch(auth_mode: str, num_cpus: int) -> tuple[RayHead, dict[str, str]]:
    # Unix socket paths must stay under ~107 bytes; session dirs add ~60 to this prefix.
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")
    home = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    token = None
    env = dict(os.environ)
    for var in ("RAY_ADDRESS", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        env.pop(var, None)
    env.update(
        # Entrypoints say ``python``: make that this interpreter, which has Ray.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        HOME=home,
        PYTHONUNBUFFERED="1",  # the startup message must reach the log file at once
        RAY_AUTH_MODE=auth_mode,
        RAY_USAGE_STATS_ENABLED="0",
        # Ray swaps 127.0.0.1 for the machine's interface address unless told that this
        # is a single-node cluster; keep every socket on loopback.
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",
    )
    headers: dict[str, str] = {}
    if auth_mode == "token":
        token = os.urandom(16).hex()
        (Path(home) / ".ray").mkdir()
        (Path(home) / ".ray" / "auth_token").write_text(token)
        env["RAY_AUTH_TOKEN"] = token
        headers = {"Authorization": f"Bearer {token}"}
    gcs, dash, agent, client, node_mgr, obj_mgr, rt_env, metrics = free_ports(8)
    cmd = [
        str(RAY_BIN),
        "start",
        "--head",
        "--block",
        f"--port={gcs}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dash}",
        f"--dashboard-agent-listen-port={agent}",
        f"--ray-client-server-port={client}",
        f"--node-manager-port={node_mgr}",
        f"--object-manager-port={obj_mgr}",
        f"--runtime-env-agent-port={rt_env}",
        f"--metrics-export-port={metrics}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--object-store-memory={256 * 1024 * 1024}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    with open(Path(temp_dir) / "ray_start.log", "wb") as log:
        proc = subprocess.Popen(
            cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{dash}"
    client_env = {
        "RAY_ADDRESS": url,
        "RAY_AUTH_MODE": auth_mode,
        "HOME": home,
        "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0",
    }
    if token is not None:
        client_env["RAY_AUTH_TOKEN"] = token
    return RayHead(proc, url, temp_dir, home, token, client_env), headers
