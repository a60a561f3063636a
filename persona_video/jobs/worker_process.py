"""The worker command, ``python -m persona_video worker --queue cpu|gpu [--concurrency N]``:
which queues this machine may serve, the warm-up of each pool process (as the server warms
up), the heartbeat GET /api/health reads, and the rescue of jobs whose worker died.
The Celery app and the job task are in :mod:`persona_video.jobs.workers`."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from typing import Any

from . import broker
from .broker import BrokerError, BrokerSettings
from .workers import celery_app, mark_failed_task, process_client

logger = logging.getLogger(__name__)

#: What this worker serves, for its heartbeat: queues, concurrency, backends.
_SERVES: dict[str, Any] = {}


def _die_with_parent() -> None:
    """Linux: a pool process is killed with its worker, so none goes on writing a job alone."""
    import ctypes
    import signal

    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        logger.info("pool processes will not die with their worker on this system")


def _on_process_init(**_: Any) -> None:
    from ..server import warm_up

    _die_with_parent()
    warm_up()


def rescue_orphaned_jobs(client: Any, app: Any) -> list[str]:
    """Put back on their queue the jobs whose worker died: the record says running, yet its
    worker's heartbeat and the job's lock have both lapsed. Their messages are restored from
    the transport's unacknowledged set (kombu's restore_by_tag, atomic: a message acknowledged
    meanwhile is left alone). Returns the job ids put back."""
    live = {worker["name"] for worker in broker.live_workers(client)}
    orphans: dict[str, str] = {}  # Celery task id -> job id
    for job_id in client.smembers(broker.ACTIVE_KEY):
        record = broker.job_record(client, job_id) or {}
        if record.get("state") != "running" or record.get("worker") in live or "task" not in record:
            continue
        if not client.exists(broker.lock_key(job_id)):
            orphans[record["task"]] = job_id
    if not orphans:
        return []
    rescued = []
    with app.connection_for_write() as connection:
        qos = connection.default_channel.qos
        for tag, raw in client.hscan_iter(qos.unacked_key):
            message = json.loads(raw)[0]
            job_id = orphans.get(message.get("headers", {}).get("id"))
            if job_id is not None:
                qos.restore_by_tag(tag)  # at the end workers take from: next in line, it was running
                rescued.append(job_id)
                logger.warning("job %s: its worker died; put back on its queue to go on elsewhere", job_id)
    return rescued


class Heartbeat:
    """The worker's heartbeat in Redis (renewed every HEARTBEAT_S), read by GET /api/health;
    every few beats it also rescues the jobs of workers that died."""

    #: Beats between two looks for jobs of dead workers.
    RESCUE_EVERY = 2

    def __init__(self, name: str, app: Any) -> None:
        self.app = app
        self.record = {"name": name, **_SERVES, "host": socket.gethostname(), "pid": os.getpid()}
        self.record["started"] = time.time()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="worker-heartbeat", daemon=True)

    def start(self, **_: Any) -> None:
        self._thread.start()

    def stop(self, **_: Any) -> None:
        self._stop.set()
        from redis.exceptions import RedisError

        try:
            process_client().delete(broker.worker_key(self.record["name"]))
        except RedisError as e:  # stopping anyway: the heartbeat lapses by itself
            logger.info("could not remove the heartbeat: %s", e)

    def _beat(self) -> None:
        from kombu.exceptions import OperationalError
        from redis.exceptions import RedisError

        beats = 0
        while True:
            try:
                broker.write_heartbeat(process_client(), {**self.record, "seen": time.time()})
                beats += 1
                if beats % self.RESCUE_EVERY == 0:
                    rescue_orphaned_jobs(process_client(), self.app)
            except (RedisError, OperationalError) as e:
                logger.warning("heartbeat not sent: %s", e)
            if self._stop.wait(broker.HEARTBEAT_S):
                return


def heavy_backends_here() -> list[str]:
    """The heavy backends this machine can run (xtts, sadtalker, gfpgan)."""
    from ..weights.runtime import backend_status

    return sorted(name for name, status in backend_status().items() if status.available)


def worker_main(queues: list[str], concurrency: int = 1, loglevel: str = "INFO") -> int:
    """Run a worker taking jobs from ``queues`` (cpu, gpu), ``concurrency`` at once, until stopped.

    BrokerError naming PERSONA_VIDEO_BROKER when it is unset, wrong or unreachable; an error
    when asked for the gpu queue on a machine that cannot run a heavy backend."""
    from celery import signals

    settings = BrokerSettings.from_env()
    broker.connect(settings.url)
    unknown = [queue for queue in queues if queue not in broker.QUEUES]
    if unknown or not queues:
        raise BrokerError(f"unknown queue {', '.join(unknown) or '(none)'}: choose cpu, gpu or cpu,gpu")
    backends = heavy_backends_here()
    if "gpu" in queues and not backends:
        from ..weights.runtime import backend_status

        why = "; ".join(f"{name}: {status.reason}" for name, status in backend_status().items())
        raise BrokerError(
            f"this machine cannot run a heavy backend ({why}), so it cannot take gpu jobs: "
            "start this worker with --queue cpu, or install the heavy backends (see the README)"
        )
    if concurrency < 1:
        raise BrokerError(f"--concurrency {concurrency}: run at least one job at a time")
    _SERVES.update(queues=list(queues), concurrency=concurrency, backends=backends)
    name = f"{'-'.join(queues)}-{os.getpid()}@{socket.gethostname()}"
    app = celery_app(settings)
    heartbeat = Heartbeat(name, app)
    signals.worker_process_init.connect(_on_process_init, weak=False)
    signals.worker_ready.connect(heartbeat.start, weak=False)
    signals.worker_shutdown.connect(heartbeat.stop, weak=False)
    signals.task_failure.connect(mark_failed_task, weak=False)
    logger.info(
        "worker %s on %s: queues %s, %d at a time, heavy backends: %s",
        name,
        broker.display_url(settings.url),
        ",".join(queues),
        concurrency,
        ", ".join(backends) or "none",
    )
    argv = ["worker", "--queues", ",".join(queues), "--concurrency", str(concurrency), "--pool", "prefork"]
    argv += ["--hostname", name, "--loglevel", loglevel, "--without-gossip", "--without-mingle", "--without-heartbeat"]
    app.worker_main(argv)
    return 0
