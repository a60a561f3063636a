"""The video stage: the governed motion rendered to frames and encoded with the speech into
the job's MP4, with its WebVTT captions.

The embedded renderer goes through the frame cache (``frame_cache.FRAMES``): frames whose
coefficients did not change since the job's last render are taken as they are, and the
video of a recent render with exactly these coefficients is given back without drawing or
encoding. SadTalker renders in its own checkout; GFPGAN restores the embedded frames.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..errors import StageError
from ..governor import FULL_3DMM_MIN_DIMS
from ..jobs.folder import Job
from ..render.stage import Portrait
from ..types import IntentTimingMap, MotionTrack, Request

if TYPE_CHECKING:
    from ..encode.hls import StreamSegment

logger = logging.getLogger(__name__)


def render_video(
    job: Job,
    portrait: Portrait,
    track: MotionTrack,
    audio: np.ndarray,
    sample_rate: int,
    timing: IntentTimingMap,
    request: Request,
    enhancer: str = "none",
) -> Generator[StreamSegment, None, tuple[Path, str, int, str]]:
    """Render the governed track and encode the MP4 and captions; a generator of the HLS segments
    (``hls``) of the embedded renderer as each is finished, so a re-render plays while it is drawn.

    enhancer: the enhance stage's choice ("gfpgan" or "none", ``enhance.stage.choose_enhancer``).
    Returns (path, backend, frames reused, "" or where the whole video came from: "last", it is
    already on disk, or "earlier", a kept video of an earlier render). Frames stream into ffmpeg
    as they are rendered (two render threads a few frames ahead), so rendering and encoding
    share the two cores. With the embedded renderer, a frame whose coefficients did not change
    since the job's last render is taken from ``frame_cache.FRAMES``, and coefficients that
    some recent render of the job had exactly give back its video: nothing is drawn or encoded.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    from ..encode.captions import write_webvtt

    out = job.path("video.mp4")
    # frames are rendered in parallel (RENDER_THREADS), so OpenCV's own per-call threads would only
    # fight them and ffmpeg for the two cores (measured: 10-30 % more CPU for the same frames)
    cv2.setNumThreads(1)
    reused, same_as = 0, ""
    # BLAS worker threads spin while idle and would steal the core ffmpeg encodes on
    with threadpool_limits(limits=1, user_api="blas"):
        if track.backend == "sadtalker":
            from ..render.sadtalker import sadtalker_frames

            frames = sadtalker_frames(job.folder, job.path("audio.wav"), track, request.still, request.framing)
            _encode(out, _to_yuv(frames), track, audio, sample_rate, request)
            backend = "sadtalker"
        elif enhancer == "gfpgan":
            from ..zerogpu import on_gpu, video_gpu_s

            # GFPGAN is a torch model in this process: on ZeroGPU the whole render runs with a lease
            on_gpu(video_gpu_s(track.num_frames), encode_enhanced, out, portrait, track, audio, sample_rate, request)
            backend = "embedded+gfpgan"
        else:
            backend = "embedded"
            reused, same_as = yield from _render_cached(job, portrait, track, audio, sample_rate, request)
    write_webvtt(timing.spans, job.path("captions.vtt"))
    return out, backend, reused, same_as


def _render_cached(
    job: Job, portrait: Portrait, track: MotionTrack, audio: np.ndarray, sample_rate: int, request: Request
) -> Generator[StreamSegment, None, tuple[int, str]]:
    """The embedded renderer through the frame cache. Returns (frames reused, "" or where the
    whole video came from: "last" when the video on disk is already the one these coefficients
    made, "earlier" when a kept video of an earlier render was written back)."""
    from ..jobs.folder import write_bytes_atomic
    from ..render.frame_cache import FRAMES, CachedRender, file_stamp

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
    frames = render_ahead(animator, coeffs, store, same)
    yield from _stream(job, frames, animator, track, audio, sample_rate, request, threads)
    if store is not None:
        FRAMES.put(CachedRender(key, coeffs.copy(), store))
    FRAMES.keep_video(key, coeffs, out.read_bytes(), file_stamp(out))
    return reused, ""


def _stream(
    job: Job,
    frames: Iterator[np.ndarray],
    animator: Any,
    track: MotionTrack,
    audio: np.ndarray,
    sample_rate: int,
    request: Request,
    threads: int,
) -> Iterator[StreamSegment]:
    """Frames and speech into the job's HLS stream, its segments yielded as each is finished, then
    the stream's packets copied into the job's MP4."""
    from ..encode.hls import STREAM_DIR, HlsEncoder

    metadata = {"title": f"Persona Video ({request.persona})", "comment": "AI-generated talking-head video"}
    size = (animator.width, animator.height)
    encoder = HlsEncoder(job.path(STREAM_DIR), *size, track.fps, sample_rate, metadata, threads)
    with encoder:
        encoder.write_audio(audio)
        for index, frame in enumerate(frames):
            encoder.write_yuv(frame)
            if index % SEGMENT_CHECK_FRAMES == 0:
                yield from encoder.new_segments()
        yield from encoder.close()
    encoder.finish(job.path("video.mp4"))


#: Frames between looks at the stream's playlist for finished segments.
SEGMENT_CHECK_FRAMES = 5


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
    from ..encode.encoder import VideoEncoder

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
    from ..encode.encoder import rgb_to_yuv

    for frame in frames:
        yield rgb_to_yuv(frame)


def encode_enhanced(
    out: Path, portrait: Portrait, track: MotionTrack, audio: np.ndarray, sample_rate: int, request: Request
) -> None:
    """The embedded render restored by GFPGAN, encoded into ``out``. Its arguments pickle: on
    ZeroGPU it runs in the platform's GPU worker process (``zerogpu.on_gpu``)."""
    from ..enhance.gfpgan import GFPGANEnhancer
    from ..weights.registry import weight_path

    enhancer = GFPGANEnhancer(weight_path("gfpgan"), device="auto")
    _encode(out, _to_yuv(_enhanced(portrait.animator, enhancer, track.coeffs)), track, audio, sample_rate, request)


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


def render_ahead(
    animator: Any, coeffs: np.ndarray, store: np.ndarray | None = None, same: np.ndarray | None = None
) -> Iterator[np.ndarray]:
    """YUV 4:2:0 frames in order, drawn by a small thread pool a few frames ahead of the encoder.

    store: (T, H * 3 / 2, W) uint8, where frame t is drawn (and yielded from), or None for a
        fresh array per frame.
    same: (T,) bool, frames already in ``store`` for these coefficients: taken as they are.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ..encode.encoder import rgb_to_yuv

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


def reuse_notice(reused: int, governed: MotionTrack, same_as: str = "") -> str:
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
