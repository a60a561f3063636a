"""The job broker's Redis (PERSONA_VIDEO_BROKER): settings, the connection, and what this
package keeps there beside Celery's own keys: job records, stage events and worker heartbeats.

Keys, all under ``persona_video:``:

    job:<job id>       hash: kind, queue, state (queued | running | done | failed), task (the
                       Celery task id of the current work), submitted/started/finished (epoch s),
                       worker (node name), attempts, error (JSON)
    events:<task id>   stream: one entry per stage event ({"event": JSON}), then {"end": JSON}; a
                       client that (re)connects reads it from the start, then blocks for more
    active             set: ids of the jobs queued or running (kept by retention)
    worker:<name>      JSON heartbeat of a worker, expiring when it stops renewing it
    lock:<job id>      the lock of the worker running the job (expiring unless renewed)
    job_seconds        moving average of a job's wall seconds, for Retry-After

Celery's keys are its own: the queue lists ``cpu`` and ``gpu``, ``unacked`` and
``unacked_index`` (jobs a worker took but has not finished), ``celery-task-meta-*`` (results).
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from ..errors import PersonaVideoError
from ..settings import env_number

logger = logging.getLogger(__name__)

BROKER_ENV = "PERSONA_VIDEO_BROKER"
PREFIX = "persona_video:"
ACTIVE_KEY = PREFIX + "active"
JOB_SECONDS_KEY = PREFIX + "job_seconds"
SUBMIT_LOCK_KEY = PREFIX + "submit"
#: The queues a job can go to: heavy backends asked for by name -> gpu, the rest -> cpu.
QUEUES = ("cpu", "gpu")
#: Longest a job may run on a worker before it is stopped (env PERSONA_VIDEO_JOB_TIMEOUT_S), seconds.
DEFAULT_JOB_TIMEOUT_S = 3600.0
#: Job records and event streams are kept this long after their last change, seconds.
RECORD_TTL_S = 7 * 24 * 3600
#: How often a worker renews its heartbeat, and how long one lasts unrenewed, seconds.
HEARTBEAT_S = 2.0
HEARTBEAT_TTL_S = 8.0
#: Startup check of the broker: how long to wait for it to answer, seconds.
CONNECT_TIMEOUT_S = 3.0


class BrokerError(PersonaVideoError):
    """The broker is misconfigured or cannot be reached."""

    status_code = 503
    code = "broker_unavailable"


@dataclass(frozen=True)
class BrokerSettings:
    """Timing of the broker path, all derived from the job time limit so they agree.

    url: the Redis URL (PERSONA_VIDEO_BROKER), e.g. redis://localhost:6379/0.
    job_timeout_s: the longest a job may run (PERSONA_VIDEO_JOB_TIMEOUT_S, default 3600 s).
    """

    url: str
    job_timeout_s: float = DEFAULT_JOB_TIMEOUT_S

    @classmethod
    def from_env(cls) -> BrokerSettings:
        url = broker_url_from_env()
        if url is None:
            raise BrokerError(f"{BROKER_ENV} is not set: set it to the Redis URL, e.g. redis://localhost:6379/0")
        timeout = env_number("PERSONA_VIDEO_JOB_TIMEOUT_S", DEFAULT_JOB_TIMEOUT_S, example="3600", minimum=5)
        return cls(check_url(url), timeout)

    @property
    def visibility_timeout_s(self) -> float:
        """A job a worker took but did not finish goes back to its queue after this long; longer
        than the longest job, so a job that is still running is never handed out twice."""
        return 1.25 * self.job_timeout_s

    @property
    def lock_ttl_s(self) -> float:
        """A job's lock lapses this long after its worker stopped renewing it (it renews it
        four times as often); shorter than the visibility timeout, so a dead worker's job is free
        by the time it is handed out again."""
        return min(30.0, max(3.0, self.visibility_timeout_s / 4))

    @property
    def restore_interval_s(self) -> float:
        """How often workers look for jobs past the visibility timeout, seconds."""
        return min(10.0, max(1.0, self.visibility_timeout_s / 10))


def broker_url_from_env() -> str | None:
    """PERSONA_VIDEO_BROKER, or None when unset or blank (jobs then run in-process)."""
    return os.environ.get(BROKER_ENV, "").strip() or None


def display_url(url: str) -> str:
    """The URL with its password replaced by ***, for logs and /api/health."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return urlunsplit(parts._replace(netloc=f"{user}***@{netloc}"))


def check_url(url: str) -> str:
    """The URL if it is one Celery and redis-py take (redis://, rediss://, unix://); else BrokerError."""
    parts = urlsplit(url)
    if parts.scheme not in ("redis", "rediss", "unix") or (parts.scheme != "unix" and not parts.hostname):
        raise BrokerError(
            f"{BROKER_ENV} = {display_url(url)!r} is not a Redis URL: set it to e.g. redis://localhost:6379/0"
        )
    try:
        parts.port  # noqa: B018 (raises on a port that is not a number)
    except ValueError as e:
        raise BrokerError(f"{BROKER_ENV} = {display_url(url)!r}: {e}; e.g. redis://localhost:6379/0") from e
    return url


def connect(url: str, *, check: bool = True) -> Any:
    """A redis-py client for the broker (str replies) that rides out a broker restart of a few
    seconds by retrying; with ``check``, BrokerError naming PERSONA_VIDEO_BROKER when it does
    not answer within CONNECT_TIMEOUT_S."""
    import redis
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.retry import Retry

    check_url(url)
    if check:
        probe = redis.Redis.from_url(
            url, socket_connect_timeout=CONNECT_TIMEOUT_S, socket_timeout=CONNECT_TIMEOUT_S, retry=Retry(NoBackoff(), 0)
        )
        try:
            probe.ping()
        except redis.RedisError as e:
            raise BrokerError(
                f"{BROKER_ENV} = {display_url(url)!r} cannot be reached ({e}): start Redis there "
                "(apt-get install redis-server, or docker compose up redis) or fix the variable, "
                "e.g. redis://localhost:6379/0"
            ) from e
        finally:
            probe.close()
    # about 20 s of retries with backoff: a Redis restart (append-only file on) loses nothing
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=CONNECT_TIMEOUT_S,
        socket_timeout=15.0,
        health_check_interval=30,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), 25),
    )


def job_key(job_id: str) -> str:
    return f"{PREFIX}job:{job_id}"


def events_key(task_id: str) -> str:
    return f"{PREFIX}events:{task_id}"


def lock_key(job_id: str) -> str:
    return f"{PREFIX}lock:{job_id}"


def worker_key(name: str) -> str:
    return f"{PREFIX}worker:{name}"


def job_record(client: Any, job_id: str) -> dict[str, Any] | None:
    """A job's record (its error decoded), or None when the broker does not know the job."""
    record = client.hgetall(job_key(job_id))
    if not record:
        return None
    record["error"] = json.loads(record["error"]) if record.get("error") else None
    record["attempts"] = int(record.get("attempts", 0))
    return record


def update_job(client: Any, job_id: str, **fields: Any) -> None:
    """Set fields of a job's record (None clears a field; dicts are stored as JSON)."""
    values = {k: json.dumps(v) if isinstance(v, dict) else v for k, v in fields.items() if v is not None}
    cleared = [k for k, v in fields.items() if v is None]
    pipe = client.pipeline()
    if values:
        pipe.hset(job_key(job_id), mapping=values)
    if cleared:
        pipe.hdel(job_key(job_id), *cleared)
    pipe.expire(job_key(job_id), RECORD_TTL_S)
    pipe.execute()


def publish_event(client: Any, task_id: str, event: dict[str, Any]) -> None:
    """Add a stage event (a job_queue.summarize dict) to the task's stream."""
    pipe = client.pipeline()
    pipe.xadd(events_key(task_id), {"event": json.dumps(event, ensure_ascii=False)})
    pipe.expire(events_key(task_id), RECORD_TTL_S)
    pipe.execute()


def publish_end(client: Any, task_id: str, state: str, error: dict[str, Any] | None) -> None:
    """Close the task's stream: its final state and error."""
    pipe = client.pipeline()
    pipe.xadd(events_key(task_id), {"end": json.dumps({"state": state, "error": error}, ensure_ascii=False)})
    pipe.expire(events_key(task_id), RECORD_TTL_S)
    pipe.execute()


def read_events(
    client: Any, task_id: str, after: str = "0-0", block_ms: int | None = None
) -> list[tuple[str, str, dict[str, Any]]]:
    """Stream entries after entry id ``after``: [(entry id, "event" | "end", data)]. With
    block_ms, waits that long for a first new entry (an empty list when none came)."""
    if block_ms is None:
        entries = client.xrange(events_key(task_id), min=f"({after}", max="+")
    else:
        answer = client.xread({events_key(task_id): after}, block=block_ms)
        entries = answer[0][1] if answer else []
    out = []
    for entry_id, fields in entries:
        kind = "end" if "end" in fields else "event"
        out.append((entry_id, kind, json.loads(fields[kind])))
    return out


def write_heartbeat(client: Any, record: dict[str, Any]) -> None:
    client.set(worker_key(record["name"]), json.dumps(record), ex=int(HEARTBEAT_TTL_S))


def live_workers(client: Any) -> list[dict[str, Any]]:
    """The heartbeats of the workers up now, by name."""
    keys = sorted(client.scan_iter(match=worker_key("*"), count=200))
    values = client.mget(keys) if keys else []
    return [json.loads(value) for value in values if value]


def record_job_seconds(client: Any, seconds: float) -> None:
    """Fold a finished job's wall seconds into the moving average Retry-After is taken from."""
    previous = client.get(JOB_SECONDS_KEY)
    average = seconds if previous is None else 0.7 * float(previous) + 0.3 * seconds
    client.set(JOB_SECONDS_KEY, f"{average:.3f}")
