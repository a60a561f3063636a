"""The job runner over the broker (PERSONA_VIDEO_BROKER set): the API and the page queue jobs
on Celery and follow their events through Redis, as they do with the in-process queue.

Jobs that name a heavy backend (sadtalker motion, the gfpgan enhancer, xtts speech) go to the
``gpu`` queue, and are refused with 503 when no gpu worker that can run them is up; the rest
go to ``cpu``. ``auto`` runs on a cpu worker with what that machine has. The queue bound
(PERSONA_VIDEO_QUEUE_SIZE waiting jobs per queue) answers 429 with Retry-After, as in-process.
Nothing lives in the server: a restarted one finds every job's record and events in Redis.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from ..errors import BackendUnavailable, NotFoundError
from . import broker
from .broker import BrokerError, BrokerSettings
from .queue import (
    FIRST_JOB_ESTIMATE_S,
    JobBusy,
    JobQueue,
    JobRunner,
    QueueFull,
    TaskFailed,
    check_request,
    queue_size_from_env,
)

if TYPE_CHECKING:
    from ..types import Request, StageEvent

logger = logging.getLogger(__name__)

#: How long a page waits for a stage's files to show up in the shared folder after its event, seconds.
FILES_GRACE_S = 5.0
#: How long one blocking read of a job's events waits, milliseconds.
FOLLOW_BLOCK_MS = 500


def heavy_needed(request: Request) -> tuple[str, ...]:
    """The heavy backends a request names (sadtalker, gfpgan, xtts): what sends it to gpu."""
    named = (
        ("sadtalker", request.motion_backend == "sadtalker"),
        ("gfpgan", request.enhancer == "gfpgan"),
        ("xtts", request.speech_backend == "xtts"),
    )
    return tuple(name for name, asked in named if asked)


class RemoteFinished:
    """``Task.finished`` for a broker's task: set once its record says done or failed."""

    def __init__(self, task: RemoteTask) -> None:
        self._task = task

    def is_set(self) -> bool:
        return not self._task.active

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.is_set():
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True


class RemoteTask:
    """A job's current work as the broker knows it, with the attributes of ``job_queue.Task``
    (job_id, kind, state, events, error, active, finished, poll); read from Redis when asked."""

    def __init__(self, client: Any, job_id: str, record: dict[str, Any]) -> None:
        self._client = client
        self.job_id = job_id
        self.kind = record.get("kind", "generate")
        self.queue = record.get("queue", "cpu")
        self.task_id = record["task"]
        self.submitted = float(record.get("submitted", 0.0))
        self.finished = RemoteFinished(self)
        self._events: list[dict[str, Any]] = []
        self._after = "0-0"
        self._lock = threading.Lock()

    def _record(self) -> dict[str, Any]:
        return broker.job_record(self._client, self.job_id) or {"state": "failed"}

    @property
    def state(self) -> str:
        return self._record().get("state", "failed")

    @property
    def error(self) -> dict[str, Any] | None:
        record = self._record()
        return record.get("error") if record.get("state") == "failed" else None

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    @property
    def events(self) -> list[dict[str, Any]]:
        self._read()
        return self._events

    def _read(self) -> None:
        with self._lock:
            for entry_id, kind, data in broker.read_events(self._client, self.task_id, self._after):
                self._after = entry_id
                if kind == "event":
                    self._events.append(data)

    def poll(self, since: int) -> tuple[bool, list[dict[str, Any]]]:
        finished = self.finished.is_set()
        self._read()
        return finished, self._events[since:]


class BrokerQueue:
    """The :class:`persona_video.jobs.queue.JobRunner` over Celery and Redis."""

    def __init__(self, settings: BrokerSettings) -> None:
        from .workers import celery_app

        self.settings = settings
        self.client = broker.connect(settings.url)  # BrokerError naming the variable, at start
        self.app = celery_app(settings)
        self.maxsize = queue_size_from_env()

    def check(self, request: Request) -> None:
        check_request(request, heavy_here=False)
        needed = heavy_needed(request)
        if needed:
            self._gpu_worker_for(needed)

    def _gpu_worker_for(self, needed: tuple[str, ...]) -> None:
        workers = [w for w in self._workers() if "gpu" in w.get("queues", ())]
        if not any(set(needed) <= set(w.get("backends", ())) for w in workers):
            have = "; ".join(f"{w['name']}: {', '.join(w['backends']) or 'none'}" for w in workers) or "none is up"
            raise BackendUnavailable(
                f"the {', '.join(needed)} backend cannot run here: no gpu worker that has it is up ({have}); "
                "start one with `python -m persona_video worker --queue gpu` on a machine with the heavy backends"
            )

    def submit_generate(self, request: Request) -> RemoteTask:
        from .folder import new_job_id

        queue = "gpu" if heavy_needed(request) else "cpu"
        return self._submit(new_job_id(), "generate", {"request": request.to_dict()}, queue)

    def submit_rerender(self, job_id: str, governor: dict[str, Any]) -> RemoteTask:
        from .folder import Job

        job = Job.open(job_id)
        saved = job.read_json("request.json")
        stages = job.manifest.get("stages", {})
        heavy = stages.get("motion", {}).get("backend") == "sadtalker" or saved.get("enhancer") == "gfpgan"
        return self._submit(job_id, "rerender", {"governor": governor}, "gpu" if heavy else "cpu")

    def _submit(self, job_id: str, kind: str, payload: dict[str, Any], queue: str) -> RemoteTask:
        from kombu.exceptions import OperationalError
        from redis.exceptions import RedisError

        from .workers import TASK_NAME

        task_id = uuid.uuid4().hex
        now = time.time()
        try:
            # one submission at a time, so the bound holds across servers
            with self.client.lock(broker.SUBMIT_LOCK_KEY, timeout=10, blocking_timeout=10):
                waiting = self.client.llen(queue)
                if waiting >= self.maxsize:
                    raise QueueFull(
                        f"the server is busy: {waiting} jobs are waiting (the limit is {self.maxsize}); "
                        "retry after the time in the Retry-After header",
                        self.retry_after_s(),
                    )
                current = broker.job_record(self.client, job_id)
                if current is not None and current.get("state") in ("queued", "running"):
                    raise JobBusy(f"job {job_id} is {current['state']}: wait for it to finish, then try again")
                fields = {"kind": kind, "queue": queue, "state": "queued", "task": task_id, "submitted": now}
                cleared = dict.fromkeys(("worker", "error", "started", "finished"))
                broker.update_job(self.client, job_id, **fields, attempts=0, **cleared)
                self.client.sadd(broker.ACTIVE_KEY, job_id)
                self.app.send_task(TASK_NAME, args=[job_id, kind, payload], task_id=task_id, queue=queue)
        except (RedisError, OperationalError) as e:
            message = f"the job broker ({broker.display_url(self.settings.url)}) did not answer: {e}"
            self._not_queued(job_id, message)
            raise BrokerError(message) from e
        logger.info("queued %s of job %s on %s (%d waiting before it)", kind, job_id, queue, waiting)
        return RemoteTask(self.client, job_id, {**fields, "task": task_id})

    def _not_queued(self, job_id: str, message: str) -> None:
        """Undo a submission whose message could not be sent, where Redis still answers."""
        from redis.exceptions import RedisError

        try:
            if self.client.hget(broker.job_key(job_id), "state") == "queued":
                error = {"code": "broker_unavailable", "message": message, "status": 503}
                broker.update_job(self.client, job_id, state="failed", error=error)
            self.client.srem(broker.ACTIVE_KEY, job_id)
        except RedisError as e:
            logger.warning("job %s was not queued and its record not undone: %s", job_id, e)

    def get(self, job_id: str) -> RemoteTask | None:
        record = broker.job_record(self.client, job_id)
        return None if record is None or "task" not in record else RemoteTask(self.client, job_id, record)

    def position(self, task: RemoteTask) -> int:
        """1 for the next job a worker of its queue takes; 0 when it is not waiting."""
        if task.state != "queued":
            return 0
        messages = self.client.lrange(task.queue, 0, -1)  # workers take from the right-hand end
        for index, raw in enumerate(messages):
            if json.loads(raw).get("headers", {}).get("id") == task.task_id:
                return len(messages) - index
        return 0

    def active_job_ids(self) -> set[str]:
        return set(self.client.smembers(broker.ACTIVE_KEY))

    def retry_after_s(self) -> int:
        """Seconds until a place is likely free: one average job (at least 1 s)."""
        average = self.client.get(broker.JOB_SECONDS_KEY)
        return max(1, round(float(average) if average else FIRST_JOB_ESTIMATE_S))

    def _workers(self) -> list[dict[str, Any]]:
        from redis.exceptions import RedisError

        try:
            return broker.live_workers(self.client)
        except RedisError as e:
            raise BrokerError(f"the job broker ({broker.display_url(self.settings.url)}) did not answer: {e}") from e

    def health(self) -> dict[str, Any]:
        """Workers up (their heartbeats), what each serves, and each queue's depth."""
        workers = self._workers()
        running: dict[str, list[str]] = {}
        running_by_queue = dict.fromkeys(broker.QUEUES, 0)
        for job_id in sorted(self.active_job_ids()):
            record = broker.job_record(self.client, job_id) or {}
            if record.get("state") == "running":
                running.setdefault(record.get("worker", ""), []).append(job_id)
                queue = record.get("queue", "cpu")
                running_by_queue[queue] = running_by_queue.get(queue, 0) + 1
        now = time.time()
        listed = []
        for worker in workers:
            info = {key: worker[key] for key in ("name", "host", "pid", "queues", "concurrency", "backends")}
            info["running"] = running.get(worker["name"], [])
            info["seen_s"] = round(max(0.0, now - float(worker["seen"])), 2)
            listed.append(info)
        queues = {
            name: {
                "waiting": self.client.llen(name),
                "running": running_by_queue.get(name, 0),
                "workers": sum(name in w["queues"] for w in workers),
                "limit": self.maxsize,
            }
            for name in broker.QUEUES
        }
        url = broker.display_url(self.settings.url)
        return {"mode": "broker", "ok": bool(workers), "broker": url, "workers": listed, "queues": queues}

    def stop(self, timeout_s: float = 30.0) -> None:
        """Nothing to stop: queued and running jobs live in Redis and on the workers."""

    def follow(self, task: RemoteTask) -> Iterator[StageEvent]:
        """The task's stage events as its worker sends them, each result read back from the
        shared job folder; "queued" events (notice: the place in the queue) while it waits.
        Raises TaskFailed when it failed."""
        from ..types import StageEvent

        after = "0-0"
        place = None
        while True:
            entries = broker.read_events(self.client, task.task_id, after, block_ms=FOLLOW_BLOCK_MS)
            for entry_id, kind, data in entries:
                after = entry_id
                if kind == "end":
                    if data["state"] != "done":
                        raise TaskFailed(data.get("error") or {"message": "the job failed", "code": "internal"})
                    return
                yield _rebuilt(data)
            if not entries:
                now_place = self.position(task)
                if now_place and now_place != place:
                    place = now_place
                    yield StageEvent("queued", task.job_id, notice=f"place {place} in the {task.queue} queue")
                elif not task.active and not broker.read_events(self.client, task.task_id, after):
                    raise TaskFailed(task.error or {"message": "the job ended without a result", "code": "internal"})


def _rebuilt(data: dict[str, Any]) -> StageEvent:
    """A StageEvent from a worker's event, its result read back from the job folder."""
    from ..pipeline.resume import restore_result
    from ..types import StageEvent
    from .folder import Job

    if data["stage"] in ("script_draft", "chunk"):  # under way: the event itself says what there is
        return StageEvent(data["stage"], data["job_id"], data["backend"], data["seconds"], _under_way(data))
    deadline = time.monotonic() + FILES_GRACE_S
    while True:
        try:
            job = Job.open(data["job_id"])
            result = restore_result(job, data["stage"])
            break
        except (OSError, ValueError, KeyError, NotFoundError):  # a shared folder may show new files late
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    return StageEvent(data["stage"], data["job_id"], data["backend"], data["seconds"], result, data.get("notice", ""))


def _under_way(data: dict[str, Any]) -> Any:
    """The result of a script_draft or chunk event from its summary (``job_queue.summarize``): the
    script so far with its count of final sentences, or the finished segment in the shared folder."""
    from ..encode.hls import STREAM_DIR, StreamSegment
    from ..types import ScriptDraft, ScriptIntent
    from .folder import Job

    if data["stage"] == "script_draft":
        # the sentences' text is in the markup so far; the page shows how many are final
        return ScriptDraft(data["script"], tuple(ScriptIntent(()) for _ in range(data["sentences"])), data["backend"])
    folder = Job.open(data["job_id"]).path(STREAM_DIR)
    name = data["url"].rsplit("/", 1)[-1]
    return StreamSegment(
        data["index"], data["start_s"], data["end_s"], folder / name, data.get("sentence", 0), data.get("sentences", 0)
    )


_SHARED: dict[str, BrokerQueue] = {}
_SHARED_LOCK = threading.Lock()


def shared_broker_queue() -> BrokerQueue | None:
    """This process's BrokerQueue for PERSONA_VIDEO_BROKER (the API's and the page's), or None
    when the variable is unset (jobs run in-process)."""
    url = broker.broker_url_from_env()
    if url is None:
        return None
    with _SHARED_LOCK:
        if url not in _SHARED:
            _SHARED[url] = BrokerQueue(BrokerSettings.from_env())
        return _SHARED[url]


def runner_from_env(after_each: Callable[[set[str]], None] | None = None) -> JobRunner:
    """The broker's queue when PERSONA_VIDEO_BROKER is set (BrokerError naming the variable
    when it is wrong or unreachable), else an in-process JobQueue calling ``after_each``."""
    from .broker import broker_url_from_env

    if broker_url_from_env() is None:
        return JobQueue(after_each=after_each)
    queue = shared_broker_queue()
    assert queue is not None
    return queue
