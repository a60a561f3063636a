"""Job folders: ``outputs/persona_<id>/`` with every stage's result.

Files (each written atomically: a temporary name, then a rename):

    request.json        what was asked
    script.txt          canonical markup; script.json: segments + backend
    audio.wav           16-bit mono speech
    timing.json         the IntentTimingMap (fps, frame_intents, total_duration, num_frames, segments)
    speech.json         speech backend, voice, notice and phoneme timings (to resume from motion)
    motion_raw.npy      (T, D) float32 coefficients from the motion stage
    motion_governed.npy (T, D) float32 after the governor; gains.json: per-frame gain curve + config
    video.mp4           H.264 + AAC; captions.vtt: WebVTT from the segment spans
    portrait.png        the user's portrait, when one was uploaded
    manifest.json       state, per-stage backend and wall time, notices, the failure if any and,
                        for jobs run by workers, each attempt (worker, host, pid)

The outputs folder is ``outputs/`` beside the working directory unless
PERSONA_VIDEO_OUTPUTS says otherwise.
"""

from __future__ import annotations

import json
import os
import re
import socket
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import NotFoundError

JOB_PREFIX = "persona_"
_JOB_ID = re.compile(r"^[0-9a-f]{32}$")
#: the only file names served or read from a job folder
JOB_FILES = (
    "request.json",
    "script.txt",
    "script.json",
    "audio.wav",
    "timing.json",
    "speech.json",
    "motion_raw.npy",
    "motion_governed.npy",
    "gains.json",
    "video.mp4",
    "captions.vtt",
    "manifest.json",
    "portrait.png",
)
#: A job's folders: the video's HLS stream while (and after) it is made.
JOB_FOLDERS = ("stream",)


#: The stage that runs after each one ("" = none has finished yet).
_NEXT_STAGE = {"": "script", "script": "speech", "speech": "motion", "motion": "governor", "governor": "video"}


def stage_after(finished: str | None) -> str:
    """The stage that was running once ``finished`` (or none, for None or "") had ended."""
    finished = finished or ""
    return _NEXT_STAGE.get(finished, finished)


def _start_ticks(pid: int) -> int | None:
    """When process ``pid`` started (clock ticks since boot, Linux), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def this_process() -> dict[str, Any]:
    """Who runs a job: host, pid and the pid's start time (so a reused pid is not taken for it)."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "started": _start_ticks(os.getpid())}


def owner_gone(manifest: dict[str, Any]) -> bool:
    """True when the process a manifest names as running its job has ended (same host only:
    elsewhere, and for manifests that name none, nothing is known, so False)."""
    owner = manifest.get("owner")
    if not isinstance(owner, dict) or owner.get("host") != socket.gethostname():
        return False
    pid = owner.get("pid")
    if not isinstance(pid, int) or pid <= 0:
        return False
    if pid != os.getpid():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except OSError:  # exists, another user's
            pass
    # the pid lives, but is it the same process? (a restarted container often gets the same pid)
    started = owner.get("started")
    return started is not None and _start_ticks(pid) not in (None, started)


def outputs_dir() -> Path:
    return Path(os.environ.get("PERSONA_VIDEO_OUTPUTS", "outputs")).resolve()


def new_job_id() -> str:
    return uuid.uuid4().hex


def validate_job_id(job_id: str) -> str:
    """The id if it is one we could have made (32 hex digits); NotFoundError otherwise."""
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise NotFoundError(f"no job {str(job_id)[:40]!r}: job ids are 32 hexadecimal digits")
    return job_id


@dataclass
class Job:
    """A job folder and its manifest, updated as stages finish."""

    job_id: str
    folder: Path
    manifest: dict[str, Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(cls, request: dict[str, Any], root: Path | None = None, job_id: str | None = None) -> Job:
        """A new job folder; job_id lets a queue hand out the id before the job runs."""
        root = root or outputs_dir()
        job_id = new_job_id() if job_id is None else validate_job_id(job_id)
        folder = root / f"{JOB_PREFIX}{job_id}"
        folder.mkdir(parents=True, exist_ok=False)
        job = cls(job_id, folder)
        job.manifest = {
            "job_id": job_id,
            "state": "running",
            "owner": this_process(),
            "created": time.time(),
            "stages": {},
            "notices": [],
            "error": None,
        }
        job.write_json("request.json", request)
        job.save_manifest()
        return job

    @classmethod
    def open(cls, job_id: str, root: Path | None = None) -> Job:
        root = root or outputs_dir()
        folder = root / f"{JOB_PREFIX}{validate_job_id(job_id)}"
        manifest_path = folder / "manifest.json"
        if not manifest_path.is_file():
            raise NotFoundError(f"no job {job_id}: it never existed or was removed by the retention policy")
        job = cls(job_id, folder)
        job.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        return job

    def path(self, name: str) -> Path:
        if name not in JOB_FILES and name not in JOB_FOLDERS:
            raise NotFoundError(f"no file {name!r} in a job: known files are {', '.join(JOB_FILES)}")
        return self.folder / name

    def tmp_path(self, name: str) -> Path:
        """A temporary sibling for writers that produce a file themselves; finish with commit()."""
        return self.folder / f".{name}.tmp{self.path(name).suffix}"

    def commit(self, name: str) -> Path:
        os.replace(self.tmp_path(name), self.path(name))
        return self.path(name)

    def write_json(self, name: str, data: Any) -> Path:
        write_json_atomic(self.path(name), data)
        return self.path(name)

    def write_text(self, name: str, text: str) -> Path:
        tmp = self.tmp_path(name)
        tmp.write_text(text, encoding="utf-8")
        return self.commit(name)

    def write_array(self, name: str, array: np.ndarray) -> Path:
        tmp = self.tmp_path(name)
        with open(tmp, "wb") as out:
            np.save(out, np.asarray(array, dtype=np.float32))
        return self.commit(name)

    def read_json(self, name: str) -> Any:
        return json.loads(self.path(name).read_text(encoding="utf-8"))

    def read_array(self, name: str) -> np.ndarray:
        return np.load(self.path(name))

    def has(self, name: str) -> bool:
        return self.path(name).is_file()

    def record_stage(self, stage: str, backend: str, seconds: float, **extra: Any) -> None:
        with self._lock:
            self.manifest["stages"][stage] = {"backend": backend, "seconds": round(seconds, 4), **extra}
            self.manifest["current_stage"] = stage
            self.save_manifest()

    def add_notice(self, notice: str) -> None:
        if notice:
            with self._lock:
                self.manifest["notices"].append(notice)
                self.save_manifest()

    def set_state(self, state: str, **extra: Any) -> None:
        with self._lock:
            self.manifest["state"] = state
            if state == "running":  # whoever runs it now: a re-render may run in another process
                self.manifest["owner"] = this_process()
            self.manifest.update(extra)
            self.save_manifest()

    def add_attempt(self, attempt: dict[str, Any]) -> None:
        """Name who runs the job now (a worker: its name, host, pid), after any earlier attempts."""
        with self._lock:
            self.manifest.setdefault("attempts", []).append({**attempt, "at": round(time.time(), 3)})
            self.save_manifest()

    def fail(self, stage: str, message: str, code: str | None = None) -> None:
        error = {"stage": stage, "message": message} | ({"code": code} if code else {})
        self.set_state("failed", error=error, finished=time.time())

    def save_manifest(self) -> None:
        write_json_atomic(self.folder / "manifest.json", self.manifest)


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Write through a temporary file and rename, so readers never see half a file."""
    import os

    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_json_atomic(path: Path, data: object) -> None:
    """Write JSON through a temporary file and rename, so readers never see half a file."""
    import json

    write_bytes_atomic(path, json.dumps(data, indent=2, ensure_ascii=False).encode("utf-8"))
