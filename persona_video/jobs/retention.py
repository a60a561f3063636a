"""Retention of the outputs folder, so a long-running Space does not fill its disk.

Keeps at most ``keep_jobs`` job folders and none older than ``keep_hours``
(env PERSONA_VIDEO_KEEP_JOBS, default 50; PERSONA_VIDEO_KEEP_HOURS, default 24).
A job whose manifest says ``queued`` or ``running``, or that the caller names
as active, is never deleted, whatever its age, unless it was interrupted (the
server or the CLI stopped mid-run): the process its manifest names as running
it has ended (same host), or, where that cannot be known, its manifest has not
changed for an hour. Then it is marked failed, saying so, and kept or deleted
by the same rules as any finished job. Uploads older than
``keep_hours`` go too. Only folders named like a job (``persona_<32 hex>``)
and files named like an upload are ever touched.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from ..errors import NotFoundError
from ..settings import env_number
from .folder import JOB_PREFIX, Job, outputs_dir, owner_gone, stage_after

logger = logging.getLogger(__name__)

DEFAULT_KEEP_JOBS = 50
DEFAULT_KEEP_HOURS = 24.0
#: A job folder without a manifest is half-created; it is only removed once this old, seconds.
ORPHAN_GRACE_S = 3600.0
_JOB_FOLDER = re.compile(rf"^{JOB_PREFIX}[0-9a-f]{{32}}$")
_UPLOAD_FILE = re.compile(r"^(portrait|voice)_[0-9a-f]{32}\.(png|wav)$")
_IN_PROGRESS = ("queued", "running")
#: A queued or running job whose manifest has not changed for this long was interrupted: every
#: stage rewrites the manifest, and none takes anywhere near this long, seconds.
STALE_IN_PROGRESS_S = 3600.0


@dataclass(frozen=True)
class RetentionPolicy:
    keep_jobs: int = DEFAULT_KEEP_JOBS  # most job folders kept, >= 1
    keep_hours: float = DEFAULT_KEEP_HOURS  # oldest job kept, hours, > 0

    @classmethod
    def from_env(cls) -> RetentionPolicy:
        """The policy from PERSONA_VIDEO_KEEP_JOBS / PERSONA_VIDEO_KEEP_HOURS; ValueError naming a bad one."""
        keep_jobs = env_number("PERSONA_VIDEO_KEEP_JOBS", DEFAULT_KEEP_JOBS, example="50", whole=True, minimum=1)
        keep_hours = env_number("PERSONA_VIDEO_KEEP_HOURS", DEFAULT_KEEP_HOURS, example="24", positive=True)
        return cls(int(keep_jobs), keep_hours)


def _job_info(folder: Path) -> tuple[dict | None, float, float]:
    """(the manifest or None when there is none readable, created time and the manifest's last
    change, epoch seconds)."""
    try:
        path = folder / "manifest.json"
        manifest = json.loads(path.read_text(encoding="utf-8"))
        touched = path.stat().st_mtime
    except (OSError, ValueError):
        return None, folder.stat().st_mtime, folder.stat().st_mtime
    created = manifest.get("created")
    return manifest, float(created) if isinstance(created, (int, float)) else folder.stat().st_mtime, touched


def _mark_interrupted(root: Path, job_id: str) -> None:
    """Say in a stale job's manifest that it was interrupted, so its status stops claiming it runs."""
    job = Job.open(job_id, root)
    message = "interrupted: the server (or the command) stopped while this job ran; generate it again"
    job.fail(stage_after(job.manifest.get("current_stage")), message, code="interrupted")
    logger.info("job %s was interrupted mid-run; marked failed", job_id)


def apply_retention(
    policy: RetentionPolicy | None = None,
    root: Path | None = None,
    active: set[str] | frozenset[str] = frozenset(),
    now: float | None = None,
) -> list[str]:
    """Delete job folders beyond the policy; returns the deleted job ids (oldest first).

    active: job ids in the queue or running here; kept whatever their manifest says.
    """
    policy = policy or RetentionPolicy.from_env()
    root = root or outputs_dir()
    now = time.time() if now is None else now
    if not root.is_dir():
        return []
    jobs: list[tuple[float, str, Path, str | None]] = []
    for folder in root.iterdir():
        if not folder.is_dir() or not _JOB_FOLDER.match(folder.name):
            continue
        job_id = folder.name.removeprefix(JOB_PREFIX)
        try:
            manifest, created, touched = _job_info(folder)
            state = None if manifest is None else str(manifest.get("state"))
            stale = now - touched > STALE_IN_PROGRESS_S
            if state in _IN_PROGRESS and job_id not in active and (stale or owner_gone(manifest or {})):
                _mark_interrupted(root, job_id)
                state = "failed"
        except (OSError, NotFoundError):  # removed meanwhile
            continue
        jobs.append((created, job_id, folder, state))
    jobs.sort(reverse=True)  # newest first
    max_age_s = policy.keep_hours * 3600.0
    deleted: list[str] = []
    kept = 0
    for created, job_id, folder, state in jobs:
        in_progress = job_id in active or state in _IN_PROGRESS
        orphan_young = state is None and now - created < ORPHAN_GRACE_S
        if in_progress or orphan_young:
            kept += 1
            continue
        if kept < policy.keep_jobs and now - created <= max_age_s:
            kept += 1
            continue
        shutil.rmtree(folder, ignore_errors=True)
        deleted.append(job_id)
    _expire_uploads(root / "uploads", now - max_age_s)
    if deleted:
        logger.info("retention removed %d job(s): %s", len(deleted), ", ".join(deleted))
    return deleted[::-1]


def _expire_uploads(folder: Path, cutoff: float) -> None:
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if _UPLOAD_FILE.match(path.name) and path.is_file() and path.stat().st_mtime < cutoff:
            path.unlink(missing_ok=True)
