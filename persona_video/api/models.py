"""Request and response models of the REST API (pydantic; they make /openapi.json).

Ranges match the pipeline's own checks, so a request the API accepts is one
the pipeline accepts; the pipeline still validates everything itself.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model, field_validator

from ..governor import FIELD_DOCS, GOVERNOR_FIELDS

PERSONA_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,31}$"
UPLOAD_ID_PATTERN = r"^[0-9a-f]{32}$"


def _not_blank(value: str | None, what: str) -> str | None:
    if value is not None and not value.strip():
        raise ValueError(f"the {what} is blank: write at least a few words")
    return value


#: Governor overrides: every GovernorConfig field, optional, with its documented range.
GovernorSettings = create_model(
    "GovernorSettings",
    __config__=ConfigDict(extra="forbid"),
    __doc__="Motion Governor overrides; a missing field keeps the job's (or persona's) value.",
    enabled=(bool | None, Field(None, description=FIELD_DOCS["enabled"])),
    **{
        name: (float | None, Field(None, ge=spec.minimum, le=spec.maximum, description=spec.help))
        for name, spec in GOVERNOR_FIELDS.items()
    },
)


class GenerateRequest(BaseModel):
    """The seed's request: what to explain, in which persona's style."""

    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1, max_length=2000, description="what the video explains, 1-2000 characters")
    persona: str = Field("mkbhd", pattern=PERSONA_PATTERN, description="persona id (GET /api/personas)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="LLM temperature; null: the persona's")
    max_tokens: int | None = Field(None, ge=16, le=2048, description="script length bound; null: the persona's")

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str) -> str:
        return _not_blank(value, "prompt")


class JobRequest(BaseModel):
    """A job: a prompt (the script is written) or a script (spoken as given), plus options."""

    model_config = ConfigDict(extra="forbid")

    prompt: str | None = Field(None, min_length=1, max_length=2000, description="what to explain (or give script)")
    script: str | None = Field(
        None, min_length=1, max_length=6000, description="text to speak; markup like [pause 0.4] and *word* honoured"
    )
    persona: str = Field("mkbhd", pattern=PERSONA_PATTERN, description="persona id (GET /api/personas)")
    temperature: float | None = Field(None, ge=0.0, le=2.0, description="LLM temperature; null: the persona's")
    max_tokens: int | None = Field(None, ge=16, le=2048, description="script length bound; null: the persona's")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="fixes the offline writer, pauses, blinks, head drift")
    voice: Literal["heart", "joe"] | None = Field(None, description="embedded voice; null: the persona's")
    speed: float | None = Field(None, ge=0.5, le=2.0, description="speaking rate multiplier; null: the persona's")
    script_backend: Literal["auto", "local", "ollama", "openai", "gemini", "offline"] = "auto"
    speech_backend: Literal["auto", "hibari", "piper", "xtts"] = "auto"
    motion_backend: Literal["auto", "embedded", "sadtalker"] = "auto"
    enhancer: Literal["auto", "none", "gfpgan"] = "auto"
    framing: Literal["crop", "full"] = "crop"
    still: bool = Field(False, description="hold the head, animate only the face")
    portrait_upload: str | None = Field(
        None, pattern=UPLOAD_ID_PATTERN, description="upload_id from POST /api/uploads/portrait"
    )
    voice_upload: str | None = Field(
        None, pattern=UPLOAD_ID_PATTERN, description="upload_id from POST /api/uploads/voice (voice cloning)"
    )
    governor: GovernorSettings | None = None  # type: ignore[valid-type]

    @field_validator("prompt")
    @classmethod
    def _prompt_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value, "prompt")

    @field_validator("script")
    @classmethod
    def _script_not_blank(cls, value: str | None) -> str | None:
        return _not_blank(value, "script")


class GenerateResponse(BaseModel):
    text: str = Field(description="the script's words as spoken")
    audio_url: str = Field(description="absolute URL of the speech (WAV)")
    video_url: str = Field(description="absolute URL of the video (H.264 + AAC MP4)")
    processing_time: float = Field(description="wall seconds the pipeline ran, script to video (queue wait excluded)")
    job_id: str
    script: str = Field(description="the script in its markup form")
    notices: list[str] = Field(description="fallbacks that happened, e.g. the offline writer after a Gemini timeout")


class JobAccepted(BaseModel):
    job_id: str
    state: Literal["queued", "running", "done", "failed"]
    position: int = Field(description="place in the queue, 1 = next; 0 when running")
    status_url: str
    events_url: str
    stream_url: str = Field(
        description="the video as a growing HLS playlist while it is made (hls.js, Safari); 404 until its first "
        "segment is finished, and for jobs on heavy backends, which do not stream"
    )


class StageInfo(BaseModel):
    model_config = ConfigDict(extra="allow")

    backend: str
    seconds: float


class ErrorInfo(BaseModel):
    code: str
    message: str
    stage: str | None = None


class JobStatus(BaseModel):
    job_id: str
    state: Literal["queued", "running", "done", "failed"]
    stage: str | None = Field(description="the last stage that finished (or failed)")
    position: int = Field(0, description="place in the queue while queued")
    stages: dict[str, StageInfo] = Field(default_factory=dict, description="per-stage backend and wall seconds")
    backends: dict[str, Any] = Field(default_factory=dict, description="what auto picked per stage and why")
    notices: list[str] = Field(default_factory=list)
    error: ErrorInfo | None = None
    processing_time: float | None = None
    text: str | None = None
    script: str | None = None
    urls: dict[str, str] = Field(default_factory=dict, description="absolute URLs of the job's files when done")


class PersonaInfo(BaseModel):
    id: str
    name: str
    description: str
    temperature: float
    max_tokens: int
    voice: str
    speed: float
    pause_range_s: tuple[float, float]
    emphasis_words: tuple[int, int]
    governor: dict[str, Any]


class UploadInfo(BaseModel):
    upload_id: str
    kind: Literal["portrait", "voice"]
    detail: dict[str, Any]


class WorkerInfo(BaseModel):
    name: str = Field(description="the worker's node name (queues-pid@host), or in-process@host")
    host: str
    pid: int
    queues: list[str] = Field(description="the queues it takes jobs from: cpu, gpu (in-process: this server)")
    concurrency: int = Field(description="jobs it runs at once")
    backends: list[str] = Field(description="heavy backends it can run (xtts, sadtalker, gfpgan)")
    running: list[str] = Field(default_factory=list, description="ids of the jobs it runs now")
    seen_s: float = Field(description="seconds since its last heartbeat")


class QueueInfo(BaseModel):
    waiting: int = Field(description="jobs waiting for a worker")
    running: int = Field(description="jobs a worker is running")
    workers: int = Field(description="workers up that take jobs from this queue")
    limit: int = Field(description="waiting jobs accepted (PERSONA_VIDEO_QUEUE_SIZE); more are refused with 429")


class DownloadInfo(BaseModel):
    """A background download of weights at start: state, 0..1 of the bytes, one line for people."""

    state: Literal["idle", "downloading", "done", "failed", "offline"]
    fraction: float
    message: str
    held_back: list[str] = Field(default_factory=list, description="groups not fetched, and why")


class Health(BaseModel):
    mode: Literal["in-process", "broker"] = Field(description="jobs run in this server, or on workers via a broker")
    ok: bool = Field(description="jobs can run: the broker answers and a worker is up (always true in-process)")
    broker: str | None = Field(description="the broker's address, password hidden (PERSONA_VIDEO_BROKER)")
    workers: list[WorkerInfo]
    queues: dict[str, QueueInfo]
    weights: DownloadInfo = Field(description="the first start's download of missing weights (idle when none)")


class ErrorBody(BaseModel):
    error: ErrorInfo


#: Documented error answers, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": text}
    for status, text in {
        400: "malformed request",
        404: "unknown persona, job, upload or file",
        413: "request body over the size limit",
        422: "invalid input, with what to change",
        429: "queue full: retry after the Retry-After header's seconds",
        503: "a backend asked for by name cannot run here, or the job broker cannot be reached",
    }.items()
}
