"""``python -m persona_video bench --broker``: what the broker adds to each job over the
in-process queue, against the ≤ 50 ms target.

Starts its own ``redis-server`` (Debian's package) on a free loopback port and one worker
process, both warm, then runs the same short job through the in-process queue and through
the broker, one after another. A job's overhead is its wall time as a client sees it (from
submission to its last event) minus the pipeline's own processing time; the figure is the
median broker overhead minus the median in-process one.
"""

from __future__ import annotations

import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import PersonaVideoError

#: What the broker may add to a job, seconds.
TARGET_OVERHEAD_S = 0.050
BENCH_JOB = "So, [pause 0.3] this is *seriously* fast."


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait(condition, what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise PersonaVideoError(f"bench --broker: {what} did not happen in {timeout_s:.0f} s")
        time.sleep(0.1)


def _in_process_runs(jobs: int) -> list[tuple[float, float]]:
    """[(wall s, processing s)] of jobs through an in-process JobQueue."""
    from ..types import Request
    from .queue import JobQueue

    queue = JobQueue(maxsize=1)
    runs = []
    for index in range(jobs + 1):  # the first one warms up
        started = time.perf_counter()
        task = queue.submit_generate(Request(script=BENCH_JOB, seed=index))
        task.finished.wait()
        wall = time.perf_counter() - started
        if task.error is not None:
            raise PersonaVideoError(f"bench --broker: an in-process job failed: {task.error['message']}")
        if index:
            runs.append((wall, task.events[-1]["processing_time"]))
    queue.stop()
    return runs


def _broker_runs(jobs: int) -> list[tuple[float, float]]:
    """[(wall s, processing s)] of jobs through the broker to the worker, read as the API reads them."""
    from ..types import Request
    from . import broker
    from .broker import BrokerSettings
    from .remote import BrokerQueue

    queue = BrokerQueue(BrokerSettings.from_env())
    runs = []
    for index in range(jobs + 1):
        started = time.perf_counter()
        task = queue.submit_generate(Request(script=BENCH_JOB, seed=index))
        after, end, done = "0-0", None, None
        while end is None:
            for entry_id, kind, data in broker.read_events(queue.client, task.task_id, after, block_ms=1000):
                after = entry_id
                if kind == "end":
                    end = data
                elif data["stage"] == "done":
                    done = data
        wall = time.perf_counter() - started
        if end["state"] != "done" or done is None:
            raise PersonaVideoError(f"bench --broker: a job on the worker failed: {end.get('error')}")
        if index:
            runs.append((wall, done["processing_time"]))
    return runs


def run_broker_bench(jobs: int = 12) -> dict:
    """Time ``jobs`` short jobs each way; returns the figures (seconds) and the target."""
    redis_server = shutil.which("redis-server")
    if redis_server is None:
        raise PersonaVideoError("bench --broker starts its own Redis: apt-get install redis-server")
    saved = {name: os.environ.get(name) for name in ("PERSONA_VIDEO_BROKER", "PERSONA_VIDEO_OUTPUTS")}
    with tempfile.TemporaryDirectory(prefix="persona-bench-broker-") as scratch:
        port = _free_port()
        redis = subprocess.Popen(
            [redis_server, "--bind", "127.0.0.1", "--port", str(port), "--dir", scratch, "--save", ""],
            stdout=subprocess.DEVNULL,
        )
        worker = None
        try:
            os.environ["PERSONA_VIDEO_BROKER"] = f"redis://127.0.0.1:{port}/0"
            os.environ["PERSONA_VIDEO_OUTPUTS"] = str(Path(scratch) / "outputs")
            from . import broker

            _wait(lambda: _answers(port), "redis-server starting")
            with open(Path(scratch) / "worker.log", "wb") as log:
                worker = subprocess.Popen(
                    [sys.executable, "-m", "persona_video", "worker", "--queue", "cpu"],
                    cwd=Path(__file__).resolve().parents[2],  # this very package
                    stdout=log,
                    stderr=log,
                )
            client = broker.connect(os.environ["PERSONA_VIDEO_BROKER"])
            _wait(lambda: broker.live_workers(client), "the worker starting")
            in_process = _in_process_runs(jobs)
            through_broker = _broker_runs(jobs)
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
            redis.terminate()
            redis.wait(10)
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    return _report(in_process, through_broker)


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def _report(in_process: list[tuple[float, float]], through_broker: list[tuple[float, float]]) -> dict:
    def median(runs: list[tuple[float, float]], part: str) -> float:
        values = [wall if part == "wall" else wall - processing for wall, processing in runs]
        return round(statistics.median(values), 4)

    overhead = round(median(through_broker, "overhead") - median(in_process, "overhead"), 4)
    return {
        "jobs": len(in_process),
        "in_process_wall_s": median(in_process, "wall"),
        "in_process_overhead_s": median(in_process, "overhead"),
        "broker_wall_s": median(through_broker, "wall"),
        "broker_overhead_s": median(through_broker, "overhead"),
        "broker_added_per_job_s": overhead,
        "target_added_per_job_s": TARGET_OVERHEAD_S,
    }


def format_broker(report: dict) -> str:
    """A Markdown table of the broker figures."""
    added_ms = report["broker_added_per_job_s"] * 1000
    target_ms = report["target_added_per_job_s"] * 1000
    verdict = f"≤ {target_ms:.0f} ms {'✓' if added_ms <= target_ms else '✗'}"
    return "\n".join(
        [
            f"{report['jobs']} short jobs each way, one warm worker on this machine",
            "",
            "| figure | measured |",
            "|---|---|",
            f"| in-process: wall per job | {report['in_process_wall_s'] * 1000:.1f} ms |",
            f"| in-process: wall minus processing | {report['in_process_overhead_s'] * 1000:.1f} ms |",
            f"| broker: wall per job | {report['broker_wall_s'] * 1000:.1f} ms |",
            f"| broker: wall minus processing | {report['broker_overhead_s'] * 1000:.1f} ms |",
            f"| added by the broker per job | {added_ms:.1f} ms ({verdict}) |",
        ]
    )
