"""Backend choice and file handling for each stage, so that pipeline.py stays
a flat sequence of calls. ``auto`` picks the heavy backend when its weights
and runtime are present, otherwise the embedded default, and says why."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendUnavailable, InputError
from .jobs.folder import Job
from .personas import Persona
from .types import IntentTimingMap, MotionTrack, Script, Speech

if TYPE_CHECKING:
    from .pipeline import Request

logger = logging.getLogger(__name__)

FRAMINGS = ("crop", "full")
MOTION_BACKENDS = ("auto", "embedded", "sadtalker")
ENHANCERS = ("auto", "none", "gfpgan")


@dataclass
class Portrait:
    """A portrait with its face found once and its animator built once."""

    image: np.ndarray  # (H, W, 3) uint8 RGB, as loaded
    key: str  # cache key: content hash + framing
    framing: str
    animator: Any  # render.PortraitAnimator


_ANIMATORS: OrderedDict[str, Any] = OrderedDict()
_ANIMATORS_LOCK = threading.Lock()
_MAX_CACHED = 6


def check_backends(request: Request, *, heavy_here: bool = True) -> None:
    """Reject unknown backend names and heavy backends that cannot run, before any work.

    heavy_here: False where heavy backends run on other machines (not checked here then)."""
    from .script import resolve_script_backend
    from .speech import resolve_voice  # noqa: F401  (validated in speak)

    resolve_script_backend(request.script_backend)
    if request.motion_backend not in MOTION_BACKENDS:
        raise InputError(
            f"unknown motion backend {request.motion_backend!r}: choose one of {', '.join(MOTION_BACKENDS)}"
        )
    if request.enhancer not in ENHANCERS:
        raise InputError(f"unknown enhancer {request.enhancer!r}: choose one of {', '.join(ENHANCERS)}")
    if request.framing not in FRAMINGS:
        raise InputError(f"unknown framing {request.framing!r}: choose crop or full")
    if not heavy_here:
        return
    from .weights.registry import heavy_backend_status

    if request.motion_backend == "sadtalker":
        status = sadtalker_status()
        if not status.available:
            raise BackendUnavailable(f"the sadtalker motion backend cannot run here: {status.reason}")
    if request.enhancer == "gfpgan":
        status = heavy_backend_status("gfpgan")
        if not status.available:
            raise BackendUnavailable(f"the gfpgan enhancer cannot run here: {status.reason}")


def auto_choices(request: Request, persona: Persona) -> dict[str, dict[str, str]]:
    """What each stage will run and why, for the manifest and the app's "auto picked" line."""
    from .script import resolve_script_backend
    from .speech import resolve_voice
    from .weights.registry import heavy_backend_status

    script_backend, script_why = resolve_script_backend(request.script_backend)
    if request.script is not None:
        script_backend, script_why = "given", "the request carries its own script"
    speech_backend, voice, notice = resolve_voice(persona, request.voice, request.speech_backend, request.reference_wav)
    xtts = heavy_backend_status("xtts")
    if speech_backend == "xtts":
        speech_why = f"voice cloning from {Path(voice).name}: {xtts.reason}"
    elif request.speech_backend == "auto":
        speech_why = f"voice {voice}" + (
            f"; xtts not used: {xtts.reason}" if not xtts.available else "; no reference voice"
        )
    else:
        speech_why = "chosen"
    sadtalker = sadtalker_status()
    motion = motion_backend_for(request)
    if motion == "sadtalker":
        motion_why = sadtalker.reason
    else:
        motion_why = "chosen" if request.motion_backend == "embedded" else f"sadtalker not used: {sadtalker.reason}"
    gfpgan = heavy_backend_status("gfpgan")
    use_gfpgan = request.enhancer == "gfpgan" or (request.enhancer == "auto" and gfpgan.available)
    enhance_why = (
        gfpgan.reason
        if use_gfpgan
        else ("chosen" if request.enhancer == "none" else f"gfpgan not used: {gfpgan.reason}")
    )
    return {
        "script": {"backend": script_backend, "why": script_why},
        "speech": {"backend": speech_backend, "why": speech_why + (f" ({notice})" if notice else "")},
        "motion": {"backend": motion, "why": motion_why},
        "render": {"backend": motion, "why": motion_why},
        "enhance": {"backend": "gfpgan" if use_gfpgan else "none", "why": enhance_why},
    }


def _animator_for(image: np.ndarray, framing: str) -> tuple[str, Any]:
    from .render import PortraitAnimator, detect_face

    key = hashlib.sha1(image.tobytes() + str(image.shape).encode()).hexdigest() + f":{framing}"
    with _ANIMATORS_LOCK:
        if key in _ANIMATORS:
            _ANIMATORS.move_to_end(key)
            return key, _ANIMATORS[key]
    landmarks = detect_face(image)
    animator = PortraitAnimator(image, landmarks, framing=framing)
    with _ANIMATORS_LOCK:
        _ANIMATORS[key] = animator
        while len(_ANIMATORS) > _MAX_CACHED:
            _ANIMATORS.popitem(last=False)
    return key, animator


def load_portrait_for(persona: Persona, upload: str | None, framing: str) -> Portrait:
    """The request's portrait (an uploaded file) or the persona's, validated, with its animator."""
    from .render import load_portrait

    if framing not in FRAMINGS:
        raise InputError(f"unknown framing {framing!r}: choose crop or full")
    if upload is not None:
        image = load_portrait(str(upload), None)
    else:
        base = persona.source.parent if persona.source else None
        image = load_portrait(persona.portrait, base)
    key, animator = _animator_for(image, framing)
    return Portrait(image, key, framing, animator)


def save_portrait(job: Job, portrait: Portrait) -> None:
    from PIL import Image

    tmp = job.tmp_path("portrait.png")
    Image.fromarray(portrait.image).save(tmp, format="PNG")
    job.commit("portrait.png")


def load_job_portrait(job: Job, persona: Persona, request: Request) -> Portrait:
    """The portrait a job used: its saved upload, or the persona's."""
    if job.has("portrait.png"):
        return load_portrait_for(persona, str(job.path("portrait.png")), request.framing)
    return load_portrait_for(persona, None, request.framing)


def save_script(job: Job, script: Script) -> None:
    job.write_text("script.txt", script.markup + "\n")
    job.write_json(
        "script.json",
        {
            "backend": script.backend,
            "model": script.model,
            "notice": script.notice,
            "markup": script.markup,
            **script.intent.to_dict(),
        },
    )


def speak(script: Script, persona: Persona, request: Request) -> Speech:
    """The script spoken; XTTS (a torch model in this process) runs with a GPU lease on ZeroGPU,
    asked for by the script's length."""
    from .speech import resolve_voice, synthesize_with_intent
    from .zerogpu import on_gpu, speech_gpu_s

    options = {
        "voice": request.voice,
        "backend": request.speech_backend,
        "speed": request.speed,
        "seed": request.seed,
        "reference_wav": request.reference_wav,
    }
    backend, _, _ = resolve_voice(persona, request.voice, request.speech_backend, request.reference_wav)
    if backend == "xtts":
        words = len(script.intent.spoken_text.split())
        return on_gpu(speech_gpu_s(words), synthesize_with_intent, script.intent, persona, **options)
    return synthesize_with_intent(script.intent, persona, **options)


def save_speech(job: Job, speech: Speech) -> None:
    from .pipeline.resume import speech_record
    from .speech import write_wav

    write_wav(job.tmp_path("audio.wav"), speech.audio, speech.sample_rate)
    job.commit("audio.wav")
    job.write_json("timing.json", speech.timing.to_dict())
    job.write_json("speech.json", speech_record(speech))  # phonemes: what motion needs to resume from here


def sadtalker_status():
    """Whether SadTalker can run here (``checkpoints.heavy_backend_status``); never on a
    ZeroGPU Space, which lends its GPU to this process only (``zerogpu.SADTALKER_REASON``)."""
    from .weights.registry import BackendStatus, heavy_backend_status
    from .zerogpu import SADTALKER_REASON, on_zero_gpu

    if on_zero_gpu():
        return BackendStatus("sadtalker", "motion/render", False, SADTALKER_REASON)
    return heavy_backend_status("sadtalker")


def motion_backend_for(request: Request) -> str:
    """ "sadtalker" when asked for, or auto and it can run here; else "embedded"."""
    if request.motion_backend == "embedded":
        return "embedded"
    if request.motion_backend == "sadtalker" or sadtalker_status().available:
        return "sadtalker"
    return "embedded"


def move(speech: Speech, persona: Persona, request: Request, job: Job, portrait: Portrait) -> MotionTrack:
    if motion_backend_for(request) == "sadtalker":
        from .motion.sadtalker import sadtalker_motion

        return sadtalker_motion(
            job.folder, job.path("audio.wav"), portrait.image, speech.timing.num_frames, request.still, request.framing
        )
    from .motion.generator import generate_motion

    return generate_motion(speech, persona.motion, seed=request.seed, still=request.still)


def load_for_rerender(job: Job) -> tuple[np.ndarray, int, IntentTimingMap, MotionTrack]:
    """A finished job's audio, timing map and raw motion."""
    from .speech import read_wav

    audio, sample_rate = read_wav(job.path("audio.wav"))
    timing = IntentTimingMap.from_dict(job.read_json("timing.json"))
    coeffs = job.read_array("motion_raw.npy").astype(np.float32)
    from .types import layout_for_dims

    backend = job.manifest.get("stages", {}).get("motion", {}).get("backend", "embedded")
    reference = np.asarray(job.manifest.get("motion_reference", np.zeros(coeffs.shape[1])), dtype=np.float32)
    track = MotionTrack(
        coeffs=coeffs, fps=timing.fps, layout=layout_for_dims(coeffs.shape[1]), reference=reference, backend=backend
    )
    return audio, sample_rate, timing, track
