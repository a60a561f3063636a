"""Workers: Celery on Redis runs the jobs a server queues when PERSONA_VIDEO_BROKER is set.

    python -m persona_video worker --queue cpu                  # the embedded backends
    python -m persona_video worker --queue gpu --concurrency 1  # a machine with the heavy backends

Every worker shares the server's outputs folder (PERSONA_VIDEO_OUTPUTS: NFS, a mounted
bucket). A job is acknowledged only once it finished (late acknowledgement, one job fetched
at a time), so one whose worker died goes back to its queue after the visibility timeout and
another worker goes on from its last finished stage (``pipeline.resume``). A Redis lock per
job, renewed while the job runs and lapsing soon after its worker dies, keeps two workers
from ever running one job; a second delivery of finished work is acknowledged and dropped.
So that a dead worker's job need not wait out the visibility timeout, live workers put it
back on its queue as soon as both its lock and its worker's heartbeat have lapsed
(``worker_process.rescue_orphaned_jobs``). The worker command itself (warm-up, heartbeat,
which queues it may serve) is in :mod:`persona_video.jobs.worker_process`.
Each attempt is named in the job's manifest (worker, host, pid). Stage events go to the
job's Redis stream as they happen, so the page and the API stream them as in-process.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from typing import Any

from ..errors import PersonaVideoError
from . import broker
from .broker import BrokerSettings
from .queue import failure, summarize

logger = logging.getLogger(__name__)

TASK_NAME = "persona_video.run_job"
#: Starts of one job (its worker died each time) after which it is marked failed, not run again.
MAX_ATTEMPTS = 3

#: This process's Redis client, made after the pool forked it (pid -> client).
_CLIENTS: dict[int, Any] = {}


class LockLost(PersonaVideoError):
    """The job's lock lapsed (Redis was away longer than its lifetime) and may be another's."""


def celery_app(settings: BrokerSettings) -> Any:
    """The Celery app on the broker: Redis as broker and result store, late acknowledgement,
    one job fetched at a time, the visibility timeout longer than the job time limit."""
    from celery import Celery

    app = Celery("persona_video", broker=settings.url, backend=settings.url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,  # a pool process killed (out of memory): back to the queue
        worker_prefetch_multiplier=1,
        task_time_limit=settings.job_timeout_s,
        task_default_queue="cpu",
        result_expires=broker.RECORD_TTL_S,
        broker_transport_options={
            "visibility_timeout": settings.visibility_timeout_s,
            "unacked_restore_interval": int(settings.restore_interval_s),
            "unacked_restore_throttle": 1,
        },
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,  # a worker outlives a Redis restart
        # a job running while the broker is away goes on; a second delivery of it is dropped
        worker_cancel_long_running_tasks_on_connection_loss=False,
        worker_proc_alive_timeout=180.0,  # each pool process warms up (voices, face mesh) first
        worker_send_task_events=False,
    )
    app.task(name=TASK_NAME, bind=True)(run_job)
    return app


def process_client() -> Any:
    """This process's Redis client for the broker (made anew in each forked pool process)."""
    pid = os.getpid()
    if pid not in _CLIENTS:
        _CLIENTS.clear()  # a forked child must not share its parent's sockets
        _CLIENTS[pid] = broker.connect(BrokerSettings.from_env().url, check=False)
    return _CLIENTS[pid]


class LockKeeper:
    """Renews a job's lock from a thread while the job runs; ``lost`` once it could not."""

    def __init__(self, lock: Any, every_s: float) -> None:
        self.lock = lock
        self.every_s = every_s
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="job-lock", daemon=True)

    def __enter__(self) -> LockKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(5)

    def _renew(self) -> None:
        from redis.exceptions import LockNotOwnedError, RedisError

        while not self._stop.wait(self.every_s):
            try:
                self.lock.reacquire()
            except LockNotOwnedError:
                logger.error("the lock of job %s lapsed: stopping this attempt", self.lock.name)
                self.lost = True
                return
            except RedisError as e:  # the broker is away: try again; the lock outlives a short outage
                logger.warning("could not renew the lock %s: %s", self.lock.name, e)


def run_job(task: Any, job_id: str, kind: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The Celery task: run (or go on with) one job's work under its lock.

    kind: "generate" (payload {"request": pipeline.Request as a dict}) or "rerender"
    (payload {"governor": overrides}). Returns {"job_id", "state"} (the result store keeps it).
    """
    client = process_client()
    settings = BrokerSettings.from_env()
    task_id = task.request.id
    record = broker.job_record(client, job_id) or {}
    if record.get("task") not in (None, task_id):
        logger.info("job %s: task %s was superseded by %s; dropped", job_id, task_id, record["task"])
        return {"job_id": job_id, "state": "superseded"}
    lock = client.lock(broker.lock_key(job_id), timeout=settings.lock_ttl_s, thread_local=False)
    if not lock.acquire(blocking=True, blocking_timeout=1.5 * settings.lock_ttl_s):
        logger.info("job %s is running on another worker: looking again in %.0f s", job_id, settings.lock_ttl_s)
        raise task.retry(countdown=settings.lock_ttl_s, max_retries=None)
    try:
        record = broker.job_record(client, job_id) or {}
        if record.get("state") in ("done", "failed"):
            logger.info("job %s was already %s: a second delivery, dropped", job_id, record["state"])
            return {"job_id": job_id, "state": record["state"]}
        with LockKeeper(lock, settings.lock_ttl_s / 4) as keeper:
            state = _attempt(client, task, job_id, kind, payload, keeper)
    finally:
        from redis.exceptions import LockError

        try:
            lock.release()
        except LockError:  # lapsed: nothing to release
            pass
    _retention(client)
    return {"job_id": job_id, "state": state}


def _attempt(client: Any, task: Any, job_id: str, kind: str, payload: dict[str, Any], keeper: LockKeeper) -> str:
    """One attempt at the job, holding its lock; returns its final state."""
    from .folder import this_process

    task_id = task.request.id
    attempts = client.hincrby(broker.job_key(job_id), "attempts", 1)
    if attempts > MAX_ATTEMPTS:
        message = (
            f"the job was started {MAX_ATTEMPTS} times and its worker stopped each time (killed, or out of "
            "memory?): see the workers' logs, then generate it again"
        )
        return _finish(client, job_id, task_id, "failed", {"code": "interrupted", "message": message, "status": 500})
    attempt = {"worker": task.request.hostname or "", **this_process(), "task": task_id}
    broker.update_job(client, job_id, state="running", worker=attempt["worker"], started=time.time())
    seen = {data["stage"] for _, what, data in broker.read_events(client, task_id) if what == "event"}
    events: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for event in _work(job_id, kind, payload, attempt):
            summary = summarize(event)
            events.append(summary)
            if summary["stage"] not in seen:  # an earlier attempt sent the events of the stages it finished
                broker.publish_event(client, task_id, summary)
            if keeper.lost:
                raise LockLost(f"the lock of job {job_id} lapsed")
    except LockLost:
        logger.error("job %s: this attempt stopped; the worker holding the lock now goes on with it", job_id)
        return "lost"
    except PersonaVideoError as e:
        logger.warning("job %s failed: %s", job_id, e)
        return _finish(client, job_id, task_id, "failed", failure(e, kind, events))
    except Exception as e:  # the worker must survive any job; the manifest says where it failed
        logger.exception("job %s failed unexpectedly", job_id)
        return _finish(client, job_id, task_id, "failed", failure(e, kind, events))
    broker.record_job_seconds(client, time.perf_counter() - started)
    return _finish(client, job_id, task_id, "done", None)


def _work(job_id: str, kind: str, payload: dict[str, Any], attempt: dict[str, Any]):
    """The pipeline generator for the job: a new generation, one picked up again, or a re-render."""
    from .. import pipeline
    from .folder import JOB_PREFIX, outputs_dir

    if kind == "rerender":
        return pipeline.rerender(job_id, payload.get("governor") or {}, attempt=attempt, locked=True)
    folder = outputs_dir() / f"{JOB_PREFIX}{job_id}"
    if (folder / "manifest.json").is_file():
        return pipeline.resume(job_id, attempt=attempt)
    if folder.exists():  # an attempt died while making the folder: start afresh
        shutil.rmtree(folder)
    return pipeline.run(pipeline.Request(**payload["request"]), job_id=job_id, attempt=attempt)


def _finish(client: Any, job_id: str, task_id: str, state: str, error: dict[str, Any] | None) -> str:
    broker.update_job(client, job_id, state=state, error=error, finished=time.time())
    client.srem(broker.ACTIVE_KEY, job_id)
    broker.publish_end(client, task_id, state, error)
    if error is not None and error.get("code") in ("interrupted", "timeout"):  # the pipeline could not say so
        _mark_manifest_failed(job_id, error["message"], error["code"])
    logger.info("job %s %s", job_id, state)
    return state


def _mark_manifest_failed(job_id: str, message: str, code: str) -> None:
    from ..errors import NotFoundError
    from .folder import Job, stage_after

    try:
        job = Job.open(job_id)
    except NotFoundError:
        return
    job.fail(stage_after(job.manifest.get("current_stage")), message, code=code)


def mark_failed_task(task_id: str = "", exception: BaseException | None = None, args: Any = None, **_: Any) -> None:
    """In the worker's main process: a job whose task failed outside its own handling (its time
    limit hit and its pool process stopped, or the broker away longer than the retries) is
    marked failed, so it does not stay running for ever."""
    from billiard.exceptions import TimeLimitExceeded
    from redis.exceptions import RedisError

    if not args or len(args) < 2:
        return
    job_id = args[0]
    if isinstance(exception, TimeLimitExceeded):
        limit = BrokerSettings.from_env().job_timeout_s
        message = (
            f"the job ran longer than PERSONA_VIDEO_JOB_TIMEOUT_S ({limit:g} s) and was stopped: "
            "raise the limit on the workers and the server, or make the video shorter"
        )
        error = {"code": "timeout", "message": message, "status": 500}
    else:
        error = {"code": "internal", "message": f"the worker failed: {type(exception).__name__}: {exception}"}
        error["status"] = 500
    try:
        client = process_client()
        record = broker.job_record(client, job_id) or {}
        if record.get("task") == task_id and record.get("state") in ("queued", "running"):
            logger.error("job %s: %s", job_id, error["message"])
            _finish(client, job_id, task_id, "failed", error)
    except RedisError as e:
        logger.error("job %s failed (%s) and could not be marked so: %s", job_id, error["message"], e)


def _retention(client: Any) -> None:
    """Retention of the shared outputs folder after each job, keeping every job the broker has active."""
    from .retention import RetentionPolicy, apply_retention

    try:
        apply_retention(RetentionPolicy.from_env(), active=set(client.smembers(broker.ACTIVE_KEY)))
    except OSError as e:  # retention must never stop the worker
        logger.warning("retention after a job failed: %s", e)
