"""The motion stage as the pipeline calls it: the backend chosen once (and why) before any work
(SadTalker when asked for, or auto and it can run here; else the embedded generator), the track
made from the speech, and its raw coefficients saved in the job folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from ..errors import BackendUnavailable, InputError
from ..personas import Persona
from ..types import BackendChoice, MotionTrack, Request, Speech

if TYPE_CHECKING:
    from ..jobs.folder import Job
    from ..weights.runtime import BackendStatus

MOTION_BACKENDS = ("auto", "embedded", "sadtalker")


def sadtalker_status() -> BackendStatus:
    """Whether SadTalker can run here (``weights.registry.heavy_backend_status``); never on a
    ZeroGPU Space, which lends its GPU to this process only (``zerogpu.SADTALKER_REASON``)."""
    from ..weights.runtime import BackendStatus, heavy_backend_status
    from ..zerogpu import SADTALKER_REASON, on_zero_gpu

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


def choose_motion(request: Request, *, heavy_here: bool = True) -> BackendChoice:
    """The motion backend (SadTalker also renders what it moves) and why; InputError for an unknown
    name, BackendUnavailable for SadTalker asked for by name where it cannot run.

    heavy_here: False where heavy backends run on other machines (not checked here then)."""
    if request.motion_backend not in MOTION_BACKENDS:
        raise InputError(
            f"unknown motion backend {request.motion_backend!r}: choose one of {', '.join(MOTION_BACKENDS)}"
        )
    status = sadtalker_status()
    if heavy_here and request.motion_backend == "sadtalker" and not status.available:
        raise BackendUnavailable(f"the sadtalker motion backend cannot run here: {status.reason}")
    backend = motion_backend_for(request)
    if backend == "sadtalker":
        return BackendChoice(backend, status.reason)
    return BackendChoice(
        backend, "chosen" if request.motion_backend == "embedded" else f"sadtalker not used: {status.reason}"
    )


def move(
    speech: Speech, persona: Persona, request: Request, choice: BackendChoice, job: Job, portrait: np.ndarray
) -> MotionTrack:
    """The motion track for the speech; portrait: (H, W, 3) uint8 RGB, what SadTalker animates."""
    if choice.backend == "sadtalker":
        from .sadtalker import sadtalker_motion

        return sadtalker_motion(
            job.folder, job.path("audio.wav"), portrait, speech.timing.num_frames, request.still, request.framing
        )
    from .generator import generate_motion

    return generate_motion(speech, persona.motion, seed=request.seed, still=request.still)


def save_motion(job: Job, track: MotionTrack) -> None:
    """motion_raw.npy, (T, D) float32, and the reference frame's coefficients in the manifest."""
    job.write_array("motion_raw.npy", track.coeffs)
    if track.reference.any():
        job.set_state("running", motion_reference=[float(v) for v in track.reference])
