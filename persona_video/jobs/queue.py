"""A bounded job queue with one worker thread: one pipeline at a time.

The machine the app targets has two cores and the pipeline uses both (render
on one, ffmpeg on the other), so jobs run one after another. Submissions
beyond ``maxsize`` waiting jobs are refused with :class:`QueueFull` (the API
answers 429 with a Retry-After estimate) instead of piling up.

Every task keeps the events its pipeline yielded as plain dicts, so a client
that connects late replays the past ones and then follows the live ones.

The API and the page use the small :class:`JobRunner` interface, which this
queue implements in-process and :class:`persona_video.jobs.remote.BrokerQueue`
implements over Celery and Redis (PERSONA_VIDEO_BROKER set): workers elsewhere
run the jobs and their events come back through Redis.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..errors import PersonaVideoError
from ..settings import env_number

if TYPE_CHECKING:
    from ..types import Request

logger = logging.getLogger(__name__)

#: Waiting jobs accepted beyond the one running (env PERSONA_VIDEO_QUEUE_SIZE).
DEFAULT_QUEUE_SIZE = 4
#: Finished tasks remembered in memory for status and events (older ones are read from disk).
MAX_REMEMBERED = 64
#: Retry-After estimate before any job has finished, seconds per job.
FIRST_JOB_ESTIMATE_S = 10.0

#: One pipeline at a time in this process, whichever door it came in by: the API's job queue
#: holds it while a job runs, the page's events while they stream. Each pipeline uses both
#: cores (render and x264), so two at once would only make both slow (and double the memory).
PIPELINE_SLOT = threading.Semaphore(1)


class QueueFull(PersonaVideoError):
    """Too many jobs waiting: the client should retry after ``retry_after_s``."""

    status_code = 429

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def queue_size_from_env() -> int:
    """PERSONA_VIDEO_QUEUE_SIZE as an int >= 0 (default 4)."""
    return int(env_number("PERSONA_VIDEO_QUEUE_SIZE", DEFAULT_QUEUE_SIZE, example="4", whole=True, minimum=0))


def summarize(event: Any) -> dict[str, Any]:
    """A pipeline StageEvent as a JSON-ready dict: stage, job_id, backend, seconds, notice
    and a small per-stage summary (never arrays)."""
    out: dict[str, Any] = {
        "stage": event.stage,
        "job_id": event.job_id,
        "backend": event.backend,
        "seconds": round(float(event.seconds), 4),
        "notice": event.notice,
    }
    result = event.result
    if event.stage == "script_draft":  # the script as it grows: markup so far, sentences final so far
        out["script"] = result.text
        out["sentences"] = len(result.sentences)
    elif event.stage == "script":
        out["text"] = result.intent.spoken_text
        out["script"] = result.markup
        if result.model:
            out["model"] = result.model
    elif event.stage == "speech":
        out["voice"] = result.voice
        out["audio_s"] = round(result.duration_s, 3)
    elif event.stage == "motion":
        out["frames"] = result.num_frames
    elif event.stage == "chunk":  # one more HLS segment of the video, playable now
        out["index"] = result.index
        out["start_s"] = round(result.start_s, 3)
        out["end_s"] = round(result.end_s, 3)
        out["url"] = f"/api/jobs/{event.job_id}/stream/{result.name}"
        out["playlist"] = f"/api/jobs/{event.job_id}/stream.m3u8"
        out["sentence"], out["sentences"] = result.sentence, result.sentences
    elif event.stage == "done":
        out["processing_time"] = round(float(event.seconds), 3)
    return out


@dataclass
class Task:
    """One queued piece of work on a job (a generation or a re-render)."""

    job_id: str
    kind: str  # generate | rerender
    work: Callable[[], Iterator[Any]]  # yields pipeline StageEvents
    state: str = "queued"  # queued | running | done | failed
    events: list[dict[str, Any]] = field(default_factory=list)
    error: dict[str, Any] | None = None  # {"code", "message", "status", "stage"}
    submitted: float = field(default_factory=time.time)
    finished: threading.Event = field(default_factory=threading.Event)

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def poll(self, since: int) -> tuple[bool, list[dict[str, Any]]]:
        """(finished, the events after the first ``since``); finished is read first, so a
        finished task's list is complete."""
        finished = self.finished.is_set()
        return finished, self.events[since:]


class TaskFailed(PersonaVideoError):
    """A queued job failed; carries the status its error had."""

    def __init__(self, error: dict[str, Any]) -> None:
        stage, message = error.get("stage"), error["message"]
        super().__init__(message if not stage or "stage failed" in message else f"{stage} stage failed: {message}")
        self.status_code = int(error.get("status", 500))
        self.code = error.get("code", "stage_failed")


class JobRunner(Protocol):
    """What the API and the page ask of whoever runs jobs: this module's in-process
    :class:`JobQueue` or the broker's ``BrokerQueue``. Tasks are :class:`Task` or an object
    with the same attributes (job_id, kind, state, events, error, active, finished) and poll."""

    maxsize: int

    def check(self, request: Request) -> None:
        """Validate a request before anything is queued (InputError, NotFoundError, BackendUnavailable)."""

    def submit_generate(self, request: Request) -> Task:
        """Queue a checked request as a new job; QueueFull when the queue is full."""

    def submit_rerender(self, job_id: str, governor: dict[str, Any]) -> Task:
        """Queue a re-render of a finished job with governor overrides."""

    def get(self, job_id: str) -> Task | None: ...

    def position(self, task: Task) -> int: ...

    def active_job_ids(self) -> set[str]: ...

    def health(self) -> dict[str, Any]:
        """Workers up (what each serves) and queue depths, for GET /api/health."""

    def stop(self, timeout_s: float = 30.0) -> None: ...


def check_request(request: Request, *, heavy_here: bool = True) -> None:
    """Everything the pipeline checks before work, so a bad request queues nothing."""
    from .. import pipeline

    pipeline.prepare(request, heavy_here=heavy_here)
    if request.prompt is not None:
        from ..script import validate_prompt

        validate_prompt(request.prompt)


def failure(error: BaseException, kind: str, events: list[dict[str, Any]]) -> dict[str, Any]:
    """A failed task's error as {"code", "message", "status", "stage"}."""
    if isinstance(error, PersonaVideoError):
        out = {"code": error_code(error), "message": str(error), "status": error.status_code}
        out["stage"] = getattr(error, "stage", None) or _current_stage(kind, events)
    else:
        out = {"code": "internal", "message": f"{type(error).__name__}: {error}", "status": 500}
        out["stage"] = _current_stage(kind, events)
    return out


class JobQueue:
    """Bounded FIFO of tasks run by one daemon worker thread, started on first use.

    maxsize: waiting tasks accepted beyond the running one; 0 refuses every submission.
    after_each: called with the set of active job ids after every task (retention).
    """

    def __init__(self, maxsize: int | None = None, after_each: Callable[[set[str]], None] | None = None) -> None:
        self.maxsize = queue_size_from_env() if maxsize is None else maxsize
        self.after_each = after_each
        self._waiting: deque[Task] = deque()
        self._tasks: OrderedDict[str, Task] = OrderedDict()
        self._cond = threading.Condition()
        self._worker: threading.Thread | None = None
        self._stopping = False
        self._job_seconds: float | None = None  # moving average of finished jobs, for Retry-After

    def submit(self, job_id: str, kind: str, work: Callable[[], Iterator[Any]]) -> Task:
        """Queue work for a job; QueueFull when maxsize tasks already wait."""
        with self._cond:
            if len(self._waiting) >= self.maxsize:
                raise QueueFull(
                    f"the server is busy: {len(self._waiting)} jobs are waiting (the limit is {self.maxsize}); "
                    "retry after the time in the Retry-After header",
                    self.retry_after_s(),
                )
            current = self._tasks.get(job_id)
            if current is not None and current.active:
                raise JobBusy(f"job {job_id} is {current.state}: wait for it to finish, then try again")
            task = Task(job_id, kind, work)
            self._tasks[job_id] = task
            self._tasks.move_to_end(job_id)
            self._waiting.append(task)
            self._forget_old()
            self._ensure_worker()
            self._cond.notify_all()
        logger.info("queued %s of job %s (%d waiting)", kind, job_id, len(self._waiting))
        return task

    def check(self, request: Request) -> None:
        check_request(request)

    def submit_generate(self, request: Request) -> Task:
        from .. import pipeline
        from .folder import new_job_id

        job_id = new_job_id()
        return self.submit(job_id, "generate", lambda: pipeline.run(request, job_id=job_id))

    def submit_rerender(self, job_id: str, governor: dict[str, Any]) -> Task:
        from .. import pipeline

        return self.submit(job_id, "rerender", lambda: pipeline.rerender(job_id, governor))

    def health(self) -> dict[str, Any]:
        """This server as the one worker, serving the in-process queue."""
        from ..weights.runtime import backend_status
        from .folder import this_process

        with self._cond:
            waiting = len(self._waiting)
            running = [task.job_id for task in self._tasks.values() if task.state == "running"]
        me = this_process()
        worker = {
            "name": f"in-process@{me['host']}",
            "host": me["host"],
            "pid": me["pid"],
            "queues": ["in-process"],
            "concurrency": 1,
            "backends": sorted(name for name, status in backend_status().items() if status.available),
            "running": running,
            "seen_s": 0.0,
        }
        queue = {"waiting": waiting, "running": len(running), "workers": 1, "limit": self.maxsize}
        return {"mode": "in-process", "ok": True, "broker": None, "workers": [worker], "queues": {"in-process": queue}}

    def get(self, job_id: str) -> Task | None:
        with self._cond:
            return self._tasks.get(job_id)

    def position(self, task: Task) -> int:
        """1 for the next task to run; 0 when it is not waiting."""
        with self._cond:
            for index, waiting in enumerate(self._waiting):
                if waiting is task:
                    return index + 1
        return 0

    def active_job_ids(self) -> set[str]:
        with self._cond:
            return {job_id for job_id, task in self._tasks.items() if task.active}

    def retry_after_s(self) -> int:
        """Seconds until a place is likely free: one average job (at least 1 s)."""
        return max(1, round(self._job_seconds or FIRST_JOB_ESTIMATE_S))

    def stop(self, timeout_s: float = 30.0) -> None:
        """Let the running task finish, drop the waiting ones (marked failed), stop the worker."""
        with self._cond:
            self._stopping = True
            dropped = list(self._waiting)
            self._waiting.clear()
            self._cond.notify_all()
            worker = self._worker
        for task in dropped:
            self._finish(task, {"code": "shutdown", "message": "the server stopped before this job ran", "status": 503})
        if worker is not None:
            worker.join(timeout_s)

    def _ensure_worker(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._stopping = False
            self._worker = threading.Thread(target=self._work, name="persona-video-jobs", daemon=True)
            self._worker.start()

    def _forget_old(self) -> None:
        while len(self._tasks) > MAX_REMEMBERED:
            oldest = next((job_id for job_id, task in self._tasks.items() if not task.active), None)
            if oldest is None:
                return
            del self._tasks[oldest]

    def _work(self) -> None:
        while True:
            with self._cond:
                while not self._waiting and not self._stopping:
                    self._cond.wait()
                if self._stopping:
                    return
            with PIPELINE_SLOT:  # the page may be running a pipeline: the task stays queued till it ends
                with self._cond:
                    if self._stopping or not self._waiting:
                        continue
                    task = self._waiting.popleft()
                    task.state = "running"
                self._run(task)
            if self.after_each is not None:
                try:
                    self.after_each(self.active_job_ids())
                except OSError as e:  # retention must never stop the worker
                    logger.warning("retention after job %s failed: %s", task.job_id, e)

    def _run(self, task: Task) -> None:
        started = time.perf_counter()
        error: dict[str, Any] | None = None
        try:
            for event in task.work():
                task.events.append(summarize(event))
        except PersonaVideoError as e:
            error = failure(e, task.kind, task.events)
            logger.warning("job %s failed: %s", task.job_id, e)
        except Exception as e:  # the worker must survive any job; the job's manifest says where
            logger.exception("job %s failed unexpectedly", task.job_id)
            error = failure(e, task.kind, task.events)
        seconds = time.perf_counter() - started
        if error is None:
            self._job_seconds = seconds if self._job_seconds is None else 0.7 * self._job_seconds + 0.3 * seconds
        self._finish(task, error)

    def _finish(self, task: Task, error: dict[str, Any] | None) -> None:
        task.error = error
        task.state = "failed" if error else "done"
        task.finished.set()


class JobBusy(PersonaVideoError):
    """Work was asked for on a job that is still queued or running."""

    status_code = 409


def _current_stage(kind: str, events: list[dict[str, Any]]) -> str:
    """The stage that was running when a task failed: the one after its last event."""
    from .folder import stage_after

    return stage_after(events[-1]["stage"] if events else ("" if kind == "generate" else "motion"))


def error_code(error: PersonaVideoError) -> str:
    """A short machine-readable code for an error class (the message is for people)."""
    return {
        400: "bad_request",
        404: "not_found",
        409: "busy",
        413: "too_large",
        422: "invalid_input",
        429: "queue_full",
        502: "service_error",
        503: "backend_unavailable",
    }.get(error.status_code, "stage_failed" if hasattr(error, "stage") else "internal")
