"""Real Redis and real worker processes for the broker tests: Debian's redis-server on a
free loopback port with its append-only file on, and `python -m persona_video worker`
processes, as a user runs them."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
#: The job time limit the test farms run with: the visibility timeout (1.25 times it) and the
#: job lock's lifetime (a quarter of that) follow from it, and with them how soon a dead
#: worker's job goes on elsewhere.
JOB_TIMEOUT_S = "40"


def need_redis() -> None:
    if not Path(REDIS_SERVER).is_file():
        pytest.skip("Debian's redis-server is not installed: apt-get install -y redis-server")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """redis-server on 127.0.0.1 and a free port, data in ``folder`` (append-only file, fsync
    on every write); ``restart`` brings it back on the same port with the same data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder)]
        command += ["--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", "redis.log"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                    conn.sendall(b"PING\r\n")
                    if conn.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}")
            time.sleep(0.05)

    def kill(self) -> None:
        """SIGKILL: whatever it did not write to its append-only file is lost."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)

    def restart(self) -> None:
        self.kill()
        self.start()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()

    def log(self) -> str:
        path = self.folder / "redis.log"
        return path.read_text(errors="replace") if path.is_file() else ""

    def client(self):
        import redis

        return redis.Redis.from_url(self.url, decode_responses=True)


def broker_env(redis: RedisServer, outputs: Path, **extra: str) -> dict[str, str]:
    """The environment of a server or worker on this farm (this checkout's package first)."""
    env = {k: v for k, v in os.environ.items() if k not in ("GEMINI_API_KEY", "PERSONA_VIDEO_LLM_BASE_URL")}
    env.update(
        PERSONA_VIDEO_BROKER=redis.url,
        PERSONA_VIDEO_OUTPUTS=str(outputs),
        PERSONA_VIDEO_JOB_TIMEOUT_S=JOB_TIMEOUT_S,
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
        GLOG_minloglevel="2",
    )
    env.update(extra)
    return env


class Worker:
    """`python -m persona_video worker --queue QUEUE`, its log in ``log_path``."""

    def __init__(self, env: dict[str, str], log_path: Path, queue: str = "cpu") -> None:
        self.log_path = log_path
        with open(log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "persona_video", "worker", "--queue", queue],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.name = f"{queue}-{self.process.pid}@{socket.gethostname()}"

    @property
    def pid(self) -> int:
        return self.process.pid

    def children(self) -> list[int]:
        """Its pool processes' pids."""
        try:
            return [int(p) for p in Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text().split()]
        except OSError:
            return []

    def kill(self) -> None:
        """SIGKILL the worker, as when its machine dies (its pool process dies with it)."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def wait_for_workers(redis: RedisServer, workers: list[Worker], timeout_s: float = 120.0) -> None:
    """Until every worker's heartbeat is in Redis and its pool process has warmed up."""
    client = redis.client()
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        while not (client.exists(f"persona_video:worker:{worker.name}") and "warm-up:" in worker.log()):
            if worker.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"worker {worker.name} did not come up:\n{worker.log()[-3000:]}")
            time.sleep(0.1)


def manifest(outputs: Path, job_id: str) -> dict:
    return json.loads((outputs / f"persona_{job_id}" / "manifest.json").read_text())


def sse(http, url: str, timeout_s: float = 180.0) -> list[tuple[str, dict]]:
    """[(event, data)] of a server-sent event stream, read to its end (http: an httpx-style client)."""
    events = []
    kind = None
    with http.stream("GET", url, timeout=timeout_s) as stream:
        assert stream.status_code == 200, stream.read()
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def wait_done(http, job_id: str, timeout_s: float = 180.0) -> dict:
    """Poll GET /api/jobs/{id} until done or failed; its last status."""
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        answer = http.get(f"/api/jobs/{job_id}")
        if answer.status_code == 200:
            status = answer.json()
            if status["state"] in ("done", "failed"):
                return status
        time.sleep(0.1)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {status}")
