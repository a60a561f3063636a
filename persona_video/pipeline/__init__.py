"""The pipeline: a flat sequence of stage calls that yields an event per stage.

    events = run(Request(prompt="Explain the M4 Mac Mini", persona="mkbhd"))
    for event in events: ...            # script, speech, motion, governor, video, done

Every surface (CLI, Gradio app, REST API) drives these generators. Input is
validated and every stage's backend chosen (``prepare``) before a job folder
exists, so bad input leaves nothing behind; a stage that fails marks the job
failed in its manifest (which stage, why) and raises.

A job whose stages all run embedded goes sentence by sentence (``streaming``);
``video`` is the video stage (render, enhance and encode through the frame
cache); ``resume`` reads finished stages back from a job folder.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..enhance.stage import choose_enhancer
from ..errors import Cancelled, InputError, PersonaVideoError, StageError
from ..governor import GovernorConfig
from ..jobs.folder import Job
from ..motion.stage import choose_motion, move, save_motion
from ..personas import Persona, load_persona
from ..render.stage import Portrait, load_job_portrait, load_portrait_for, save_portrait
from ..script import script_from_text, stream_script
from ..script.stage import choose_writer, save_script
from ..speech.stage import choose_voice, save_speech, speak
from ..types import BackendChoice, IntentTimingMap, MotionTrack, Request, Script, Speech, StageEvent
from . import streaming
from . import video as video_stage
from .resume import load_for_rerender

logger = logging.getLogger(__name__)


def governor_config_for(persona: Persona, overrides: dict[str, Any] | None) -> GovernorConfig:
    """The persona's governor defaults with the request's overrides applied (validated)."""
    return GovernorConfig.from_dict({**persona.governor, **(overrides or {})})


def choose_backends(request: Request, persona: Persona, *, heavy_here: bool = True) -> dict[str, BackendChoice]:
    """What each stage will run and why, each stage asked once, in order (the manifest's
    ``backends``, the page's "auto picked" line); raises for a backend that is unknown or, asked
    for by name, cannot run here.

    heavy_here: False where heavy backends run elsewhere (a server handing jobs to gpu
        workers): one asked for by name is then not checked against this machine."""
    motion = choose_motion(request, heavy_here=heavy_here)
    return {
        "script": choose_writer(request),
        "speech": choose_voice(request, persona, heavy_here=heavy_here),
        "motion": motion,
        "render": motion,  # SadTalker renders what it moves; the embedded motion, the mesh renderer
        "enhance": choose_enhancer(request, heavy_here=heavy_here),
    }


@dataclass
class Plan:
    """A validated request's persona, governor settings, portrait and backend choices."""

    persona: Persona
    config: GovernorConfig
    portrait: Portrait
    backends: dict[str, BackendChoice]

    def backends_record(self) -> dict[str, dict[str, str]]:
        return {stage: choice.to_dict() for stage, choice in self.backends.items()}


def prepare(request: Request, *, heavy_here: bool = True) -> Plan:
    """Validate everything that can be validated before any work, and choose each stage's backend:
    raises InputError/NotFoundError/BackendUnavailable.

    heavy_here: False where heavy backends run elsewhere (a server handing jobs to gpu
        workers): one asked for by name is then not checked against this machine."""
    persona = load_persona(request.persona)
    if (request.prompt is None) == (request.script is None):
        raise InputError("give either a prompt (what to explain) or a script (what to say), not both")
    config = governor_config_for(persona, request.governor)
    backends = choose_backends(request, persona, heavy_here=heavy_here)
    if request.script is not None:
        script_from_text(request.script, persona)  # broken markup is reported before any work
    if request.reference_wav is not None:
        from ..speech import validate_reference_upload

        validate_reference_upload(request.reference_wav)
    portrait = load_portrait_for(persona, request.portrait, request.framing)
    return Plan(persona, config, portrait, backends)


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
    plan = prepare(request)
    if request.prompt is not None:
        from ..script import validate_prompt

        validate_prompt(request.prompt)
    job = Job.create(request.to_dict(), root, job_id)
    if attempt is not None:
        job.add_attempt(attempt)
    job.set_state("running", backends=plan.backends_record())
    if request.portrait is not None:
        save_portrait(job, plan.portrait)
    yield from _generate(job, request, plan, started, (), cancel)


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
        portrait = load_portrait_for(persona, request.portrait, request.framing)
        save_portrait(job, portrait)
    else:
        portrait = load_job_portrait(job, persona, request)
    plan = Plan(persona, config, portrait, choose_backends(request, persona))
    finished = finished_stages(job)
    if attempt is not None:
        job.add_attempt({**attempt, "resumed_after": finished[-1] if finished else None})
    job.set_state("running", error=None)
    if "backends" not in job.manifest:
        job.set_state("running", backends=plan.backends_record())
    yield from _generate(job, request, plan, started, finished)


def _again(job: Job, stage: str) -> StageEvent:
    """The event of a stage an earlier attempt finished, its result read back from the job folder."""
    from .resume import recorded, restore_result

    backend, seconds = recorded(job, stage)
    result = restore_result(job, stage)
    return StageEvent(stage, job.job_id, backend, seconds, result, getattr(result, "notice", ""))


def _generate(
    job: Job,
    request: Request,
    plan: Plan,
    started: float,
    finished: tuple[str, ...],
    cancel: threading.Event | None = None,
) -> Iterator[StageEvent]:
    """Script, speech and motion (each read back instead when in `finished`), then `_render`;
    a new job whose stages all run embedded goes sentence by sentence instead (``streaming``)."""
    persona, config, portrait = plan.persona, plan.config, plan.portrait
    if not finished and streaming.can_stream(plan.backends):
        # the writer's thread stops on it too when the caller stops listening (streaming.run_streamed)
        cancel = cancel if cancel is not None else threading.Event()
        script_events = _script_stage(job, request, plan, cancel)
        yield from streaming.run_streamed(job, request, persona, config, portrait, started, script_events, cancel)
        return
    if "script" in finished:
        event = _again(job, "script")
    else:
        for event in _script_stage(job, request, plan, cancel):
            if event.stage == "script":
                break
            yield event
    yield event
    script: Script = event.result

    if "speech" in finished:
        event = _again(job, "speech")
    else:
        _check_cancelled(cancel, job, "speech")
        speech, seconds = _timed("speech", job, speak, script, persona, request, plan.backends["speech"])
        save_speech(job, speech)
        job.record_stage("speech", speech.backend, seconds, voice=speech.voice, audio_s=round(speech.duration_s, 3))
        job.add_notice(speech.notice)
        event = StageEvent("speech", job.job_id, speech.backend, seconds, speech, speech.notice)
    yield event
    speech: Speech = event.result

    if "motion" in finished:
        event = _again(job, "motion")
    else:
        _check_cancelled(cancel, job, "motion")
        motion = plan.backends["motion"]
        track, seconds = _timed("motion", job, move, speech, persona, request, motion, job, portrait.image)
        save_motion(job, track)
        job.record_stage("motion", track.backend, seconds, frames=track.num_frames)
        event = StageEvent("motion", job.job_id, track.backend, seconds, track)
    yield event

    audio, sample_rate, timing = speech.audio, speech.sample_rate, speech.timing
    _check_cancelled(cancel, job, "video")
    enhancer = plan.backends["enhance"].backend
    yield from _render(
        job, request, config, portrait, enhancer, audio, sample_rate, timing, event.result, started, finished
    )


def _script_stage(job: Job, request: Request, plan: Plan, cancel: threading.Event | None) -> Iterator[StageEvent]:
    """The script stage: a ``script_draft`` event as a model's script grows, then the ``script``
    event with the finished Script, saved in the job folder."""
    script_started = time.perf_counter()
    persona = plan.persona
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
            plan=plan.backends["script"].target,
        )
        while True:
            draft, _ = _timed("script", job, next, drafts, None)
            if draft is None or draft.script is not None:
                break
            seconds = time.perf_counter() - script_started
            yield StageEvent("script_draft", job.job_id, draft.backend, seconds, draft)
        script, seconds = draft.script, time.perf_counter() - script_started
    save_script(job, script)
    job.record_stage("script", script.backend, seconds, **({"model": script.model} if script.model else {}))
    job.add_notice(script.notice)
    yield StageEvent("script", job.job_id, script.backend, seconds, script, script.notice)


def _render(
    job: Job,
    request: Request,
    config: GovernorConfig,
    portrait: Portrait,
    enhancer: str,
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
        rendered = video_stage.render_video(job, portrait, governed, audio, sample_rate, timing, request, enhancer)
        video, backend, reused, same_as = yield from _stream_events("video", job, rendered, started)
        seconds = time.perf_counter() - clock
        job.record_stage("video", backend, seconds, frames=governed.num_frames, reused_frames=reused)
        event = StageEvent(
            "video", job.job_id, backend, seconds, video, video_stage.reuse_notice(reused, governed, same_as)
        )
    total = time.perf_counter() - started
    job.set_state("done", finished=time.time(), processing_time=round(total, 3))
    yield event
    yield StageEvent("done", job.job_id, "", total, job)


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
        raise InputError(f"job {job_id} is still running: wait for it to finish, then re-render")
    for name in ("audio.wav", "timing.json", "motion_raw.npy"):
        if not job.has(name):
            raise InputError(f"job {job_id} has no {name}: it failed before that stage; generate it again")
    saved = job.read_json("request.json")
    request = replace(Request(**saved), governor={**saved.get("governor", {}), **(governor or {})})
    persona = load_persona(request.persona)
    config = governor_config_for(persona, request.governor)
    portrait = load_job_portrait(job, persona, request)
    enhancer = choose_enhancer(request).backend
    audio, sample_rate, timing, track = load_for_rerender(job)
    job.write_json("request.json", request.to_dict())
    if attempt is not None:
        job.add_attempt({**attempt, "kind": "rerender"})
    job.set_state("running", rerenders=int(job.manifest.get("rerenders", 0)) + 1)
    yield from _render(job, request, config, portrait, enhancer, audio, sample_rate, timing, track, started)


__all__ = ["Request", "StageEvent", "prepare", "rerender", "resume", "run", "speak_script", "Speech"]
