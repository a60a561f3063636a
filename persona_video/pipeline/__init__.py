"""The pipeline: a flat sequence of stage calls that yields an event per stage.

    events = run(Request(prompt="Explain the M4 Mac Mini", persona="mkbhd"))
    for event in events: ...            # script, speech, motion, governor, video, done

Every surface (CLI, Gradio app, REST API) drives these generators. Input is
validated before a job folder exists, so bad input leaves nothing behind; a
stage that fails marks the job failed in its manifest (which stage, why) and
raises.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from .. import stages
from ..errors import Cancelled, PersonaVideoError, StageError
from ..governor import FULL_3DMM_MIN_DIMS, GovernorConfig
from ..jobs.folder import Job
from ..personas import Persona, load_persona
from ..script import script_from_text, stream_script
from ..types import IntentTimingMap, MotionTrack, Script, Speech
from . import streaming
from . import video as video_stage

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Request:
    """One generation request. None means "the persona's value"."""

    persona: str = "mkbhd"
    prompt: str | None = None  # what to explain; or give `script`
    script: str | None = None  # a script to speak instead (markup honoured, plain text annotated)
    temperature: float | None = None  # LLM temperature, 0..2
    max_tokens: int | None = None  # script length bound, 16..2048
    seed: int = 0  # fixes the offline writer, pause draws, blinks and head drift
    voice: str | None = None  # heart | joe
    speed: float | None = None  # speaking rate, 0.5..2
    script_backend: str = "auto"  # auto | offline | gemini | openai
    speech_backend: str = "auto"  # auto | hibari | piper | xtts
    motion_backend: str = "auto"  # auto | embedded | sadtalker
    enhancer: str = "auto"  # auto | none | gfpgan
    portrait: str | None = None  # path to the user's portrait (None: the persona's)
    reference_wav: str | None = None  # the user's voice sample for cloning (xtts only; 3-30 s)
    framing: str = "crop"  # crop | full
    still: bool = False  # hold the head, animate only the face
    governor: dict[str, Any] = field(default_factory=dict)  # GovernorConfig overrides

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class StageEvent:
    """What a stage produced: stage name, job, backend, wall seconds, its result."""

    stage: str  # script_draft | script | speech | motion | governor | video | done
    job_id: str
    backend: str = ""
    seconds: float = 0.0
    result: Any = None
    notice: str = ""


def governor_config_for(persona: Persona, overrides: dict[str, Any] | None) -> GovernorConfig:
    """The persona's governor defaults with the request's overrides applied (validated)."""
    return GovernorConfig.from_dict({**persona.governor, **(overrides or {})})


def prepare(request: Request, *, heavy_here: bool = True) -> tuple[Persona, GovernorConfig, stages.Portrait]:
    """Validate everything that can be validated before any work: raises InputError/NotFoundError.

    heavy_here: False where heavy backends run elsewhere (a server handing jobs to gpu
        workers): one asked for by name is then not checked against this machine."""
    persona = load_persona(request.persona)
    if (request.prompt is None) == (request.script is None):
        from ..errors import InputError

        raise InputError("give either a prompt (what to explain) or a script (what to say), not both")
    config = governor_config_for(persona, request.governor)
    stages.check_backends(request, heavy_here=heavy_here)
    from ..speech import resolve_voice

    speech_backend = "auto" if request.speech_backend == "xtts" and not heavy_here else request.speech_backend
    resolve_voice(persona, request.voice, speech_backend, request.reference_wav)
    if request.script is not None:
        script_from_text(request.script, persona)  # broken markup is reported before any work
    if request.reference_wav is not None:
        from ..speech import validate_reference_upload

        validate_reference_upload(request.reference_wav)
    portrait = stages.load_portrait_for(persona, request.portrait, request.framing)
    return persona, config, portrait


def _timed(stage: str, job: Job, fn, *args, **kwargs):
    start = time.perf_counter()
    try:
        result = fn(*args, **kwargs)
    except Cancelled:
        job.set_state("cancelled", cancelled_in=stage, finished=time.time())
        raise
    except PersonaVideoError as e:
        job.fail(stage, str(e))
        raise
    except Exception as e:  # an unexpected failure still leaves a manifest that says where
        job.fail(stage, f"{type(e).__name__}: {e}")
        raise StageError(stage, f"{type(e).__name__}: {e}") from e
    return result, time.perf_counter() - start


def _stream_events(stage: str, job: Job, segments, started: float):
    """A ``chunk`` event for each HLS segment a stage's generator yields; returns what it returns.
    A failure is recorded in the manifest as in `_timed`."""
    try:
        while True:
            try:
                segment = next(segments)
            except StopIteration as done:
                return done.value
            yield StageEvent("chunk", job.job_id, "embedded", time.perf_counter() - started, segment)
    except PersonaVideoError as e:
        job.fail(stage, str(e))
        raise
    except Exception as e:
        job.fail(stage, f"{type(e).__name__}: {e}")
        raise StageError(stage, f"{type(e).__name__}: {e}") from e


def _check_cancelled(cancel: threading.Event | None, job: Job, stage: str) -> None:
    """Cancelled (and the manifest says so) when the job was cancelled before ``stage``."""
    if cancel is not None and cancel.is_set():
        job.set_state("cancelled", cancelled_in=stage, finished=time.time())
        raise Cancelled(f"the job was cancelled before its {stage} stage")


def run(
    request: Request,
    *,
    root: Path | None = None,
    job_id: str | None = None,
    attempt: dict[str, Any] | None = None,
    cancel: threading.Event | None = None,
) -> Iterator[StageEvent]:
    """Run every stage for a request, yielding an event as each finishes (and a
    ``script_draft`` event as the script grows, while a model writes it).

    job_id: the id for the new job folder (a queue hands it out early); None makes one.
    attempt: who runs it (a worker's name, host, pid), kept in the manifest's attempts.
    cancel: set it to stop the job (a new Generate): the manifest then says "cancelled"."""
    started = time.perf_counter()
    persona, config, portrait = prepare(request)
    if request.prompt is not None:
        from ..script import validate_prompt

        validate_prompt(request.prompt)
    job = Job.create(request.to_dict(), root, job_id)
    if attempt is not None:
        job.add_attempt(attempt)
    job.set_state("running", backends=stages.auto_choices(request, persona))
    if request.portrait is not None:
        stages.save_portrait(job, portrait)
    yield from _generate(job, request, persona, config, portrait, started, (), cancel)


def resume(job_id: str, *, root: Path | None = None, attempt: dict[str, Any] | None = None) -> Iterator[StageEvent]:
    """Go on with a generation whose process died mid-run (a worker killed): the stages an
    earlier attempt finished are read back from the job folder, not run again, and their events
    yielded again with the recorded backend and seconds; the other stages run as in `run`.

    attempt: who runs it now, added to the manifest's attempts with the last finished stage."""
    from .resume import finished_stages

    started = time.perf_counter()
    job = Job.open(job_id, root)
    request = Request(**job.read_json("request.json"))
    persona = load_persona(request.persona)
    config = governor_config_for(persona, request.governor)
    if request.portrait is not None and not job.has("portrait.png"):  # died before saving it
        portrait = stages.load_portrait_for(persona, request.portrait, request.framing)
        stages.save_portrait(job, portrait)
    else:
        portrait = stages.load_job_portrait(job, persona, request)
    finished = finished_stages(job)
    if attempt is not None:
        job.add_attempt({**attempt, "resumed_after": finished[-1] if finished else None})
    job.set_state("running", error=None)
    if "backends" not in job.manifest:
        job.set_state("running", backends=stages.auto_choices(request, persona))
    yield from _generate(job, request, persona, config, portrait, started, finished)


def _again(job: Job, stage: str) -> StageEvent:
    """The event of a stage an earlier attempt finished, its result read back from the job folder."""
    from .resume import recorded, restore_result

    backend, seconds = recorded(job, stage)
    result = restore_result(job, stage)
    return StageEvent(stage, job.job_id, backend, seconds, result, getattr(result, "notice", ""))


def _generate(
    job: Job,
    request: Request,
    persona: Persona,
    config: GovernorConfig,
    portrait: stages.Portrait,
    started: float,
    finished: tuple[str, ...],
    cancel: threading.Event | None = None,
) -> Iterator[StageEvent]:
    """Script, speech and motion (each read back instead when in `finished`), then `_render`;
    a new job whose stages all run embedded goes sentence by sentence instead (``streaming``)."""
    if not finished and streaming.can_stream(request, persona):
        script_events = _script_stage(job, request, persona, cancel)
        yield from streaming.run_streamed(job, request, persona, config, portrait, started, script_events, cancel)
        return
    if "script" in finished:
        event = _again(job, "script")
    else:
        for event in _script_stage(job, request, persona, cancel):
            if event.stage == "script":
                break
            yield event
    yield event
    script: Script = event.result

    if "speech" in finished:
        event = _again(job, "speech")
    else:
        _check_cancelled(cancel, job, "speech")
        speech, seconds = _timed("speech", job, stages.speak, script, persona, request)
        stages.save_speech(job, speech)
        job.record_stage("speech", speech.backend, seconds, voice=speech.voice, audio_s=round(speech.duration_s, 3))
        job.add_notice(speech.notice)
        event = StageEvent("speech", job.job_id, speech.backend, seconds, speech, speech.notice)
    yield event
    speech: Speech = event.result

    if "motion" in finished:
        event = _again(job, "motion")
    else:
        _check_cancelled(cancel, job, "motion")
        track, seconds = _timed("motion", job, stages.move, speech, persona, request, job, portrait)
        job.write_array("motion_raw.npy", track.coeffs)
        if track.reference.any():
            job.set_state("running", motion_reference=[float(v) for v in track.reference])
        job.record_stage("motion", track.backend, seconds, frames=track.num_frames)
        event = StageEvent("motion", job.job_id, track.backend, seconds, track)
    yield event

    audio, sample_rate, timing = speech.audio, speech.sample_rate, speech.timing
    _check_cancelled(cancel, job, "video")
    yield from _render(job, request, config, portrait, audio, sample_rate, timing, event.result, started, finished)


def _script_stage(job: Job, request: Request, persona: Persona, cancel: threading.Event | None) -> Iterator[StageEvent]:
    """The script stage: a ``script_draft`` event as a model's script grows, then the ``script``
    event with the finished Script, saved in the job folder."""
    script_started = time.perf_counter()
    if request.script is not None:
        script, seconds = _timed("script", job, script_from_text, request.script, persona)
    else:
        drafts = stream_script(
            request.prompt,
            persona,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            seed=request.seed,
            backend=request.script_backend,
            cancel=cancel,
        )
        while True:
            draft, _ = _timed("script", job, next, drafts, None)
            if draft is None or draft.script is not None:
                break
            seconds = time.perf_counter() - script_started
            yield StageEvent("script_draft", job.job_id, draft.backend, seconds, draft)
        script, seconds = draft.script, time.perf_counter() - script_started
    stages.save_script(job, script)
    job.record_stage("script", script.backend, seconds, **({"model": script.model} if script.model else {}))
    job.add_notice(script.notice)
    yield StageEvent("script", job.job_id, script.backend, seconds, script, script.notice)


def _render(
    job: Job,
    request: Request,
    config: GovernorConfig,
    portrait: stages.Portrait,
    audio,
    sample_rate: int,
    timing: IntentTimingMap,
    track: MotionTrack,
    started: float,
    finished: tuple[str, ...] = (),
) -> Iterator[StageEvent]:
    """Governor, render and encode (each read back instead when in `finished`); the done event
    carries the wall time since `started`."""
    from ..governor import govern

    if "governor" in finished:
        event = _again(job, "governor")
    else:
        (governed, gains), seconds = _timed("governor", job, govern, track, timing, config)
        job.write_array("motion_governed.npy", governed.coeffs)
        job.write_json("gains.json", {"config": config.to_dict(), "gains": [round(float(g), 4) for g in gains]})
        job.record_stage("governor", "numpy", seconds)
        event = StageEvent("governor", job.job_id, "numpy", seconds, (governed, gains, config))
    yield event
    governed = event.result[0]

    if "video" in finished:
        event = _again(job, "video")
    else:
        clock = time.perf_counter()
        rendered = video_stage.render_video(job, portrait, governed, audio, sample_rate, timing, request)
        video, backend, reused, same_as = yield from _stream_events("video", job, rendered, started)
        seconds = time.perf_counter() - clock
        job.record_stage("video", backend, seconds, frames=governed.num_frames, reused_frames=reused)
        event = StageEvent("video", job.job_id, backend, seconds, video, _reuse_notice(reused, governed, same_as))
    total = time.perf_counter() - started
    job.set_state("done", finished=time.time(), processing_time=round(total, 3))
    yield event
    yield StageEvent("done", job.job_id, "", total, job)


def _reuse_notice(reused: int, governed: MotionTrack, same_as: str = "") -> str:
    """What a re-render took from earlier ones, in words ("" when it drew every frame)."""
    if same_as == "earlier":
        return "The motion is the same as in an earlier render of this job, so its video was used again."
    if reused == 0:
        return ""
    if reused < governed.num_frames:
        return f"{reused} of {governed.num_frames} frames had the same motion as before and were reused."
    why = " (expression clamp and pose smoothing act only on SadTalker's 257-dim motion)"
    return (
        "The motion is the same as in the last render, so the video is unchanged"
        + (why if governed.coeffs.shape[1] < FULL_3DMM_MIN_DIMS else "")
        + "."
    )


def speak_script_request(job_id: str, script_text: str, *, root: Path | None = None) -> Request:
    """The request of a job with its prompt replaced by an edited script."""
    old = Job.open(job_id, root)
    return Request(**{**old.read_json("request.json"), "prompt": None, "script": script_text})


def speak_script(job_id: str, script_text: str, *, root: Path | None = None) -> Iterator[StageEvent]:
    """Re-run a job from speech with an edited script (a new job; the old one stays)."""
    yield from run(speak_script_request(job_id, script_text, root=root), root=root)


def rerender(
    job_id: str,
    governor: dict[str, Any] | None = None,
    *,
    root: Path | None = None,
    attempt: dict[str, Any] | None = None,
    locked: bool = False,
) -> Iterator[StageEvent]:
    """New governor settings on a finished job: reuse its audio, timing map and raw
    coefficients; run governor, render and encode only; replace its video.

    attempt: who runs it (a worker), kept in the manifest's attempts.
    locked: the caller holds the job's lock (a worker), so a manifest that still says running
        is an earlier attempt's that died: the re-render runs again."""
    started = time.perf_counter()
    job = Job.open(job_id, root)
    if job.manifest.get("state") == "running" and not locked:
        from ..errors import InputError

        raise InputError(f"job {job_id} is still running: wait for it to finish, then re-render")
    for name in ("audio.wav", "timing.json", "motion_raw.npy"):
        if not job.has(name):
            from ..errors import InputError

            raise InputError(f"job {job_id} has no {name}: it failed before that stage; generate it again")
    saved = job.read_json("request.json")
    request = replace(Request(**saved), governor={**saved.get("governor", {}), **(governor or {})})
    persona = load_persona(request.persona)
    config = governor_config_for(persona, request.governor)
    portrait = stages.load_job_portrait(job, persona, request)
    audio, sample_rate, timing, track = stages.load_for_rerender(job)
    job.write_json("request.json", request.to_dict())
    if attempt is not None:
        job.add_attempt({**attempt, "kind": "rerender"})
    job.set_state("running", rerenders=int(job.manifest.get("rerenders", 0)) + 1)
    yield from _render(job, request, config, portrait, audio, sample_rate, timing, track, started)


__all__ = ["Request", "StageEvent", "prepare", "rerender", "resume", "run", "speak_script", "Speech"]
