"""A throwaway multi-node Ray cluster on this machine, for fault tests.

Every node is its own ``ray start --block`` process in its own session (process
group), with its own short temp dir and free ports, so a node is removed the way a
machine dies: by SIGKILL to everything in its session. ``ray stop`` is never used,
since it would stop every Ray cluster on the machine.
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

RAY_BIN = Path(sys.executable).with_name("ray")
HOST = "127.0.0.1"


def free_port() -> int:
    """A TCP port that was free a moment ago (the node binds it a few seconds later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def session_pids(sid: int) -> list[int]:
    """Pids of the live processes whose session id is ``sid`` (Linux ``/proc``).

    Ray workers put themselves in their own process groups but stay in the session
    of the process that started them, so the session finds them all."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            pids.append(int(entry.name))
    return pids


def _node_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
    )
    return env


def kill_session(sid: int, timeout_s: float = 30.0) -> list[int]:
    """SIGKILL every live process of session ``sid``; wait until none is left.

    Returns the pids that were still alive after ``timeout_s`` (empty when all died).
    """
    deadline = time.monotonic() + timeout_s
    while True:
        pids = session_pids(sid)
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if not pids or time.monotonic() > deadline:
            return pids
        time.sleep(0.2)


@dataclass
class RayNode:
    """One ``ray start --block`` process and everything it started."""

    name: str
    process: subprocess.Popen
    temp_dir: str
    log_path: Path

    def pids(self) -> list[int]:
        return session_pids(self.process.pid)

    def find_worker(self, marker: str) -> int | None:
        """Pid of a process of this node whose command line (Ray sets it to the actor's
        name, e.g. ``ray::MapWorker(MapBatches(NerStage))``) contains ``marker``."""
        for pid in self.pids():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if marker in cmd:
                return pid
        return None

    def kill(self) -> None:
        """Remove the node abruptly, as a machine that dies: SIGKILL to its session."""
        left = kill_session(self.process.pid)
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        if left:
            raise RuntimeError(f"node {self.name}: processes {left} survived SIGKILL")

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]


@dataclass
class LocalCluster:
    """A head and worker nodes on loopback; ``env`` points drivers (``ray.init()``) at it."""

    head: RayNode
    gcs_address: str
    workers: list[RayNode] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {
            "RAY_ADDRESS": self.gcs_address,
            "RAY_AUTH_MODE": "disabled",
        }

    def add_worker(self, num_cpus: int, num_gpus: int = 0, timeout_s: float = 180.0) -> RayNode:
        """Start a worker node that joins the head; wait until the GCS lists it alive.

        ``num_gpus`` are logical: Ray schedules on them, torch still sees no CUDA device.
        """
        name = f"worker{len(self.workers) + 1}"
        node = _start_node(name, [f"--address={self.gcs_address}"], num_cpus, num_gpus)
        self.workers.append(node)
        alive = 1 + sum(1 for w in self.workers if w.process.poll() is None)
        try:
            self.wait_for_nodes(alive, timeout_s)
        except BaseException:
            raise RuntimeError(f"{name} did not join:\n{node.log_tail()}") from None
        return node

    def alive_nodes(self) -> int:
        """Nodes the GCS reports alive (asked with ``ray``'s own GCS client)."""
        from ray._raylet import GcsClient

        infos = GcsClient(address=self.gcs_address).get_all_node_info(timeout=10)
        return sum(1 for info in infos.values() if info.state == 0)  # 0: ALIVE

    def wait_for_nodes(self, count: int, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            try:
                if self.alive_nodes() >= count:
                    return
            except Exception as e:  # the GCS may not answer yet
                last = e
            time.sleep(1)
        raise TimeoutError(f"fewer than {count} nodes alive after {timeout_s} s ({last!r})")

    def stop(self) -> None:
        for node in [*self.workers, self.head]:
            kill_session(node.process.pid)
            if node.process.poll() is None:
                node.process.wait(timeout=10)
        for node in [*self.workers, self.head]:
            shutil.rmtree(node.temp_dir, ignore_errors=True)


def _start_node(name: str, flags: list[str], num_cpus: int, num_gpus: int) -> RayNode:
    # Unix socket paths must stay under ~107 bytes; session dirs add ~60 to this prefix.
    temp_dir = tempfile.mkdtemp(prefix="rc", dir="/tmp")
    cmd = [
        str(RAY_BIN),
        "start",
        "--block",
        *flags,
        f"--node-ip-address={HOST}",
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--num-cpus={num_cpus}",
        f"--num-gpus={num_gpus}",
        f"--object-store-memory={128 * 1024 * 1024}",
        f"--temp-dir={temp_dir}",
        "--disable-usage-stats",
    ]
    log_path = Path(temp_dir) / "ray_start.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            cmd, env=_node_env(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    return RayNode(name, proc, temp_dir, log_path)


def start_cluster(head_cpus: int, head_gpus: int = 0, timeout_s: float = 180.0) -> LocalCluster:
    """Start a head (no dashboard) on loopback; add workers with ``add_worker``."""
    port = free_port()
    head = _start_node(
        "head",
        [
            "--head",
            f"--port={port}",
            "--include-dashboard=false",
            f"--dashboard-port={free_port()}",  # checked even without a dashboard
            f"--ray-client-server-port={free_port()}",
        ],
        head_cpus,
        head_gpus,
    )
    cluster = LocalCluster(head, f"{HOST}:{port}")
    try:
        cluster.wait_for_nodes(1, timeout_s)
    except BaseException:
        tail = head.log_tail()
        cluster.stop()
        raise RuntimeError(f"Ray head failed to start:\n{tail}") from None
    return cluster
