"""Backend choice and file handling for each stage, so that pipeline.py stays
a flat sequence of calls. ``auto`` picks the heavy backend when its weights
and runtime are present, otherwise the embedded default, and says why."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import BackendUnavailable, InputError, StageError
from .jobs import Job
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


def check_backends(request: Request) -> None:
    """Reject unknown backend names and heavy backends that cannot run, before any work."""
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
    from .checkpoints import heavy_backend_status

    if request.motion_backend == "sadtalker":
        status = heavy_backend_status("sadtalker")
        if not status.available:
            raise BackendUnavailable(f"the sadtalker motion backend cannot run here: {status.reason}")
    if request.enhancer == "gfpgan":
        status = heavy_backend_status("gfpgan")
        if not status.available:
            raise BackendUnavailable(f"the gfpgan enhancer cannot run here: {status.reason}")


def auto_choices(request: Request, persona: Persona) -> dict[str, dict[str, str]]:
    """What each stage will run and why, for the manifest and the app's "auto picked" line."""
    from .checkpoints import heavy_backend_status
    from .script import resolve_script_backend
    from .speech import resolve_voice

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
    sadtalker = heavy_backend_status("sadtalker")
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
        {"backend": script.backend, "notice": script.notice, "markup": script.markup, **script.intent.to_dict()},
    )


def speak(script: Script, persona: Persona, request: Request) -> Speech:
    from .speech import synthesize_with_intent

    return synthesize_with_intent(
        script.intent,
        persona,
        voice=request.voice,
        backend=request.speech_backend,
        speed=request.speed,
        seed=request.seed,
        reference_wav=request.reference_wav,
    )


def save_speech(job: Job, speech: Speech) -> None:
    from .speech import write_wav

    write_wav(job.tmp_path("audio.wav"), speech.audio, speech.sample_rate)
    job.commit("audio.wav")
    job.write_json("timing.json", speech.timing.to_dict())


def motion_backend_for(request: Request) -> str:
    """ "sadtalker" when asked for, or auto and it can run here; else "embedded"."""
    if request.motion_backend == "embedded":
        return "embedded"
    from .checkpoints import heavy_backend_status

    if request.motion_backend == "sadtalker" or heavy_backend_status("sadtalker").available:
        return "sadtalker"
    return "embedded"


def move(speech: Speech, persona: Persona, request: Request, job: Job, portrait: Portrait) -> MotionTrack:
    if motion_backend_for(request) == "sadtalker":
        from .heavy.sadtalker_stage import sadtalker_motion

        return sadtalker_motion(
            job.folder, job.path("audio.wav"), portrait.image, speech.timing.num_frames, request.still, request.framing
        )
    from .motion import generate_motion

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


def render_video(
    job: Job,
    portrait: Portrait,
    track: MotionTrack,
    audio: np.ndarray,
    sample_rate: int,
    timing: IntentTimingMap,
    request: Request,
) -> tuple[Path, str, int, str]:
    """Render the governed track and encode the MP4 and captions.

    Returns (path, backend, frames reused, "" or where the whole video came from: "last", it is
    already on disk, or "earlier", a kept video of an earlier render). Frames stream into ffmpeg
    as they are rendered (two render threads a few frames ahead), so rendering and encoding
    share the two cores. With the embedded renderer, a frame whose coefficients did not change
    since the job's last render is taken from ``frame_cache.FRAMES``, and coefficients that
    some recent render of the job had exactly give back its video: nothing is drawn or encoded.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    from .captions import write_webvtt

    out = job.path("video.mp4")
    # frames are rendered in parallel (RENDER_THREADS), so OpenCV's own per-call threads would only
    # fight them and ffmpeg for the two cores (measured: 10-30 % more CPU for the same frames)
    cv2.setNumThreads(1)
    reused, same_as = 0, ""
    # BLAS worker threads spin while idle and would steal the core ffmpeg encodes on
    with threadpool_limits(limits=1, user_api="blas"):
        if track.backend == "sadtalker":
            from .heavy.sadtalker_stage import sadtalker_frames

            frames = sadtalker_frames(job.folder, job.path("audio.wav"), track, request.still, request.framing)
            _encode(out, _to_yuv(frames), track, audio, sample_rate, request)
            backend = "sadtalker"
        elif (enhancer := _enhancer_for(request)) is not None:
            _encode(
                out, _to_yuv(_enhanced(portrait.animator, enhancer, track.coeffs)), track, audio, sample_rate, request
            )
            backend = "embedded+gfpgan"
        else:
            backend = "embedded"
            reused, same_as = _render_cached(job, portrait, track, audio, sample_rate, request)
    write_webvtt(timing.spans, job.path("captions.vtt"))
    return out, backend, reused, same_as


def _render_cached(
    job: Job, portrait: Portrait, track: MotionTrack, audio: np.ndarray, sample_rate: int, request: Request
) -> tuple[int, str]:
    """The embedded renderer through the frame cache. Returns (frames reused, "" or where the
    whole video came from: "last" when the video on disk is already the one these coefficients
    made, "earlier" when a kept video of an earlier render was written back)."""
    from .frame_cache import FRAMES, CachedRender, file_stamp
    from .types import write_bytes_atomic

    out = job.path("video.mp4")
    key = (job.job_id, portrait.key)
    coeffs = np.ascontiguousarray(track.coeffs, dtype=np.float32)
    kept = FRAMES.kept_video(key, coeffs)
    if kept is not None:
        data, stamp = kept
        if stamp is not None and stamp == file_stamp(out):
            logger.info("job %s: the motion is unchanged, so is its video", job.job_id)
            return len(coeffs), "last"
        write_bytes_atomic(out, data)
        FRAMES.keep_video(key, coeffs, data, file_stamp(out))
        logger.info("job %s: the motion of an earlier render, whose video is kept: written back", job.job_id)
        return len(coeffs), "earlier"
    animator = portrait.animator
    entry, same, store = FRAMES.checkout(key, coeffs, animator.height, animator.width)
    del entry
    reused = int(same.sum())
    # with most frames taken as they are, the renderer leaves the cores to x264
    threads = (os.cpu_count() or 1) if 2 * reused >= len(coeffs) else 1
    _encode(out, _render_ahead(animator, coeffs, store, same), track, audio, sample_rate, request, threads)
    if store is not None:
        FRAMES.put(CachedRender(key, coeffs.copy(), store))
    FRAMES.keep_video(key, coeffs, out.read_bytes(), file_stamp(out))
    return reused, ""


def _encode(
    out: Path,
    frames: Iterator[np.ndarray],
    track: MotionTrack,
    audio: np.ndarray,
    sample_rate: int,
    request: Request,
    threads: int = 1,
) -> None:
    """Encode YUV 4:2:0 frames ((H * 3 / 2, W) uint8 each) and the speech into ``out`` (x264 ``threads``)."""
    from .encode import VideoEncoder

    first = next(frames, None)
    if first is None:
        raise StageError("render", "the motion track has no frames: the audio is shorter than one video frame")
    height, width = first.shape[0] * 2 // 3, first.shape[1]
    metadata = {"title": f"Persona Video ({request.persona})", "comment": "AI-generated talking-head video"}
    # a re-render replaces the job's video: the speech is the same, so its AAC track is copied
    previous = out if out.is_file() else None
    with VideoEncoder(
        out,
        width,
        height,
        fps=track.fps,
        audio=audio,
        sample_rate=sample_rate,
        metadata=metadata,
        audio_copy_from=previous,
        threads=threads,
    ) as encoder:
        encoder.write_yuv(first)
        for frame in frames:
            encoder.write_yuv(frame)


def _to_yuv(frames: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """RGB frames as the encoder takes them (BT.601 YUV 4:2:0, see ``encode.rgb_to_yuv``)."""
    from .encode import rgb_to_yuv

    for frame in frames:
        yield rgb_to_yuv(frame)


def _enhanced(animator: Any, enhancer: Any, coeffs: np.ndarray) -> Iterator[np.ndarray]:
    """Rendered frames restored by GFPGAN in batches (landmarks from the animator)."""
    for start in range(0, len(coeffs), ENHANCE_BATCH):
        block = coeffs[start : start + ENHANCE_BATCH]
        frames = np.stack([animator.render_frame(c) for c in block])
        landmarks = np.stack([animator.frame_landmarks(c) for c in block])
        yield from enhancer.enhance_batch(frames, landmarks)


ENHANCE_BATCH = 8
RENDER_THREADS = 2  # frames rendered at once (OpenCV and numpy release the GIL)
RENDER_AHEAD = 8  # frames in flight at most, so memory stays bounded


def _render_ahead(
    animator: Any, coeffs: np.ndarray, store: np.ndarray | None = None, same: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """YUV 4:2:0 frames in order, drawn by a small thread pool a few frames ahead of the encoder.

    store: (T, H * 3 / 2, W) uint8, where frame t is drawn (and yielded from), or None for a
        fresh array per frame.
    same: (T,) bool, frames already in ``store`` for these coefficients: taken as they are.
    """
    from concurrent.futures import ThreadPoolExecutor

    from .encode import rgb_to_yuv

    def draw(index: int) -> np.ndarray:
        return rgb_to_yuv(animator.render_frame(coeffs[index]), None if store is None else store[index])

    # frames to draw are handed to the pool up to RENDER_AHEAD ahead of the encoder, counting
    # only those: a stretch of reused frames does not hold up drawing the changed ones after it
    to_draw = [i for i in range(len(coeffs)) if store is None or same is None or not same[i]]
    in_flight: dict[int, Any] = {}
    with ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="render") as pool:
        queued = 0
        for index in range(len(coeffs)):
            while queued < len(to_draw) and len(in_flight) < RENDER_AHEAD:
                in_flight[to_draw[queued]] = pool.submit(draw, to_draw[queued])
                queued += 1
            drawn = in_flight.pop(index, None)
            yield drawn.result() if drawn is not None else store[index]


def _enhancer_for(request: Request):
    """The GFPGAN enhancer when asked for (or auto and available), else None."""
    if request.enhancer == "none":
        return None
    from .checkpoints import heavy_backend_status, weight_path

    status = heavy_backend_status("gfpgan")
    if not status.available:
        if request.enhancer == "gfpgan":
            raise BackendUnavailable(f"the gfpgan enhancer cannot run here: {status.reason}")
        return None
    from .heavy.gfpgan import GFPGANEnhancer

    return GFPGANEnhancer(weight_path("gfpgan"), device="auto")
