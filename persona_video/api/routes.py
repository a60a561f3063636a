"""The REST API: the seed's synchronous endpoint, jobs with server-sent events,
re-render, personas, uploads and job files. Mounted under ``/api`` by
:func:`persona_video.server.create_server`.

Every generation goes through the server's one job runner (the in-process
:class:`JobQueue`, or the broker's queue when PERSONA_VIDEO_BROKER is set), so
the synchronous endpoint and the job endpoints share the same limit. Input is
validated (pydantic, then the pipeline's own ``prepare``) before anything is
queued, so bad input gets a 4xx and leaves no job folder. Files are served by
job id and known file name only: no path a client sends reaches the file system.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, File, Request, UploadFile
from fastapi.responses import FileResponse, Response, StreamingResponse

from .. import pipeline
from ..errors import InputError, NotFoundError
from ..jobs.folder import JOB_FILES, Job, validate_job_id
from ..jobs.queue import JobBusy, JobRunner, Task, TaskFailed
from ..jobs.uploads import save_portrait_upload, save_voice_upload, upload_path
from ..personas import list_personas, load_persona
from .models import (
    ERROR_RESPONSES,
    GenerateRequest,
    GenerateResponse,
    GovernorSettings,
    Health,
    JobAccepted,
    JobRequest,
    JobStatus,
    PersonaInfo,
    UploadInfo,
)

logger = logging.getLogger(__name__)

router = APIRouter(responses=ERROR_RESPONSES)

MEDIA_TYPES = {
    ".mp4": "video/mp4",
    ".wav": "audio/wav",
    ".vtt": "text/vtt",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".npy": "application/octet-stream",
    ".png": "image/png",
}
#: Files listed in a finished job's status, by the name the client sees.
URL_FILES = {
    "video": "video.mp4",
    "audio": "audio.wav",
    "captions": "captions.vtt",
    "script": "script.txt",
    "timing": "timing.json",
    "manifest": "manifest.json",
}
#: How often the event stream looks for new stage events, seconds.
EVENT_POLL_S = 0.05
#: How often the stream re-reads the manifest of a job this server's queue did not run, seconds.
MANIFEST_POLL_S = 0.25


def _queue(request: Request) -> JobRunner:
    return request.app.state.job_queue


def _file_url(request: Request, job_id: str, name: str) -> str:
    return str(request.url_for("job_file", job_id=job_id, name=name))


def _to_pipeline_request(body: GenerateRequest | JobRequest) -> pipeline.Request:
    """The pipeline Request for an API body, uploads resolved to their stored files."""
    data = body.model_dump(exclude_none=True)
    portrait_id = data.pop("portrait_upload", None)
    voice_id = data.pop("voice_upload", None)
    governor = data.pop("governor", {}) or {}
    if portrait_id is not None:
        data["portrait"] = str(upload_path("portrait", portrait_id))
    if voice_id is not None:
        data["reference_wav"] = str(upload_path("voice", voice_id))
    return pipeline.Request(**data, governor=governor)


def _submit(queue: JobRunner, body: GenerateRequest | JobRequest) -> Task:
    """Check the request in full (a bad one queues nothing), then queue it."""
    request = _to_pipeline_request(body)
    queue.check(request)
    return queue.submit_generate(request)


def _accepted(http: Request, queue: JobRunner, task: Task) -> JobAccepted:
    return JobAccepted(
        job_id=task.job_id,
        state=task.state,
        position=queue.position(task),
        status_url=str(http.url_for("job_status", job_id=task.job_id)),
        events_url=str(http.url_for("job_events", job_id=task.job_id)),
        stream_url=str(http.url_for("job_stream", job_id=task.job_id)),
    )


@router.get("/personas", response_model=list[PersonaInfo], summary="The personas to choose from")
def personas() -> list[PersonaInfo]:
    return [
        PersonaInfo(
            id=p.id,
            name=p.name,
            description=p.description,
            temperature=p.script.temperature,
            max_tokens=p.script.max_tokens,
            voice=p.speech.voice,
            speed=p.speech.speed,
            pause_range_s=p.script.pause_range_s,
            emphasis_words=p.script.emphasis_words,
            governor=p.governor_config().to_dict(),
        )
        for p in list_personas()
    ]


@router.post(
    "/generate/persona-video", response_model=GenerateResponse, summary="Prompt to video, waiting for the result"
)
def generate(body: GenerateRequest, http: Request) -> GenerateResponse:
    task = _submit(_queue(http), body)
    task.finished.wait()
    if task.error is not None:
        raise TaskFailed(task.error)
    done = task.events[-1]
    script = next(e for e in task.events if e["stage"] == "script")
    job = Job.open(task.job_id)
    return GenerateResponse(
        text=script["text"],
        audio_url=_file_url(http, task.job_id, "audio.wav"),
        video_url=_file_url(http, task.job_id, "video.mp4"),
        processing_time=done["processing_time"],
        job_id=task.job_id,
        script=script["script"],
        notices=list(job.manifest.get("notices", [])),
    )


@router.post("/jobs", response_model=JobAccepted, status_code=202, summary="Queue a job; returns its id at once")
def create_job(body: JobRequest, http: Request) -> JobAccepted:
    queue = _queue(http)
    return _accepted(http, queue, _submit(queue, body))


def _status(http: Request, job_id: str) -> JobStatus:
    validate_job_id(job_id)
    task = _queue(http).get(job_id)
    try:
        job: Job | None = Job.open(job_id)
    except NotFoundError:
        if task is None:
            raise
        job = None
    manifest = job.manifest if job is not None else {}
    if task is not None and (task.active or not manifest):
        state = task.state
    else:
        state = manifest.get("state", "failed")
        state = state if state in ("queued", "running", "done", "failed") else "failed"
    error = manifest.get("error") if state == "failed" else None
    if state == "failed" and task is not None and task.error is not None:
        error = {**(error or {}), **{k: task.error[k] for k in ("code", "message")}}
        error.setdefault("stage", task.error.get("stage"))
    if error is not None:
        error.setdefault("code", "stage_failed")
    status = JobStatus(
        job_id=job_id,
        state=state,
        stage=manifest.get("current_stage") or (task.events[-1]["stage"] if task and task.events else None),
        position=_queue(http).position(task) if task is not None else 0,
        stages=manifest.get("stages", {}),
        backends=manifest.get("backends", {}),
        notices=manifest.get("notices", []),
        error=error,
        processing_time=manifest.get("processing_time"),
    )
    if job is not None and job.has("script.json"):
        from ..types import ScriptIntent

        saved = job.read_json("script.json")
        status.text = ScriptIntent.from_dict(saved).spoken_text
        status.script = saved.get("markup")
    if job is not None and state == "done":
        status.urls = {key: _file_url(http, job_id, name) for key, name in URL_FILES.items() if job.has(name)}
    return status


@router.get("/jobs/{job_id}", response_model=JobStatus, summary="State, stages, times, notices, result URLs")
def job_status(job_id: str, http: Request) -> JobStatus:
    return _status(http, job_id)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n"


@router.get(
    "/jobs/{job_id}/events",
    summary="Server-sent events: past stage events, then live ones, then 'end' with the final status",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
def job_events(job_id: str, http: Request) -> StreamingResponse:
    first = _status(http, job_id)  # 404 before the stream starts
    task = _queue(http).get(job_id)

    async def stream() -> AsyncIterator[str]:
        if task is None:  # not run by this queue (an earlier server, the page): follow its manifest
            sent: set[str] = set()
            status = first
            while True:
                for stage, info in status.stages.items():
                    if stage not in sent:
                        sent.add(stage)
                        yield _sse("stage", {"stage": stage, "job_id": job_id, **info.model_dump()})
                if status.state not in ("queued", "running") or await http.is_disconnected():
                    break
                await asyncio.sleep(MANIFEST_POLL_S)
                try:
                    status = _status(http, job_id)
                except NotFoundError:  # removed meanwhile: nothing more to tell
                    return
        else:
            sent = 0
            while True:
                # off the event loop: a broker's task reads Redis, which may be slow to answer
                finished, fresh = await asyncio.to_thread(task.poll, sent)
                for event in fresh:
                    yield _sse("stage", event)
                sent += len(fresh)
                if finished:
                    break
                if await http.is_disconnected():
                    return
                await asyncio.sleep(EVENT_POLL_S)
        final = await asyncio.to_thread(_status, http, job_id)
        yield _sse("end", final.model_dump(mode="json"))

    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)


@router.post(
    "/jobs/{job_id}/rerender",
    response_model=JobAccepted,
    status_code=202,
    summary="New governor settings on a finished job: governor, render and encode only",
)
def rerender(job_id: str, settings: GovernorSettings, http: Request) -> JobAccepted:
    job = Job.open(job_id)
    if job.manifest.get("state") in ("queued", "running"):
        raise JobBusy(f"job {job_id} is {job.manifest['state']}: wait for it to finish, then re-render")
    for name in ("audio.wav", "timing.json", "motion_raw.npy"):
        if not job.has(name):
            raise InputError(f"job {job_id} has no {name}: it failed before that stage; generate it again")
    overrides = settings.model_dump(exclude_none=True)
    saved = job.read_json("request.json")
    pipeline.governor_config_for(
        load_persona(saved.get("persona", "mkbhd")), {**saved.get("governor", {}), **overrides}
    )
    queue = _queue(http)
    return _accepted(http, queue, queue.submit_rerender(job_id, overrides))


@router.get(
    "/health",
    response_model=Health,
    summary="Workers up, what each serves, how deep each queue is, the first-start download",
)
def health(http: Request) -> Health:
    from ..weights.first_start import status

    return Health(**_queue(http).health(), weights=status())


@router.get("/jobs/{job_id}/files/{name}", summary="One of a job's files, by its known name")
def job_file(job_id: str, name: str) -> FileResponse:
    if name not in JOB_FILES:
        raise NotFoundError(f"no file {name[:60]!r} in a job: known files are {', '.join(JOB_FILES)}")
    job = Job.open(job_id)
    path = job.path(name)
    if not path.is_file():
        raise NotFoundError(f"job {job_id} has no {name} (yet): check GET /api/jobs/{job_id} for its state")
    suffix = path.suffix
    return FileResponse(
        path,
        media_type=MEDIA_TYPES.get(suffix, "application/octet-stream"),
        filename=name,
        content_disposition_type="inline",
    )


@router.get(
    "/jobs/{job_id}/stream.m3u8",
    summary="The job's video as an HLS playlist that grows while it is made (EVENT type; ends with the job)",
    response_class=Response,
    responses={200: {"content": {"application/vnd.apple.mpegurl": {}}}},
)
def job_stream(job_id: str) -> Response:
    from ..encode.hls import PLAYLIST, STREAM_DIR

    job = Job.open(job_id)
    try:
        text = job.path(STREAM_DIR).joinpath(PLAYLIST).read_text(encoding="utf-8")
    except OSError:
        raise NotFoundError(
            f"job {job_id} has no stream yet: its first segment is not finished (or it runs on a heavy backend, "
            f"which does not stream); check GET /api/jobs/{job_id}, or wait for the video"
        ) from None
    # the segments are served beside the playlist's URL, under stream/
    lines = [f"{STREAM_DIR}/{line}" if line and not line.startswith("#") else line for line in text.splitlines()]
    return Response("\n".join(lines) + "\n", media_type="application/vnd.apple.mpegurl", headers=NO_CACHE)


@router.get("/jobs/{job_id}/stream/{name}", summary="One segment of a job's stream (MPEG-TS, H.264 + AAC)")
def job_stream_segment(job_id: str, name: str) -> FileResponse:
    from ..encode.hls import STREAM_DIR, is_segment_name

    if not is_segment_name(name):
        raise NotFoundError(f"no segment {name[:60]!r}: segments are named seg_00000.ts, seg_00001.ts, ...")
    path = Job.open(job_id).path(STREAM_DIR) / name
    if not path.is_file():
        raise NotFoundError(f"job {job_id} has no segment {name} (yet): read its playlist, stream.m3u8")
    return FileResponse(path, media_type="video/mp2t")


#: Playlists and events change while a job runs: never served from a cache.
NO_CACHE = {"Cache-Control": "no-cache"}


@router.post("/uploads/portrait", response_model=UploadInfo, status_code=201, summary="Upload a portrait photo")
async def upload_portrait(
    file: Annotated[UploadFile, File(description="JPEG or PNG photo with one face")],
) -> UploadInfo:
    data = await file.read()
    upload = await asyncio.to_thread(save_portrait_upload, data, file.filename)
    return UploadInfo(upload_id=upload.upload_id, kind="portrait", detail=upload.detail)


@router.post("/uploads/voice", response_model=UploadInfo, status_code=201, summary="Upload a reference voice")
async def upload_voice(file: Annotated[UploadFile, File(description="WAV/FLAC/OGG speech, 3-30 s")]) -> UploadInfo:
    data = await file.read()
    upload = await asyncio.to_thread(save_voice_upload, data, file.filename)
    return UploadInfo(upload_id=upload.upload_id, kind="voice", detail=upload.detail)


__all__ = ["TaskFailed", "router"]
