"""Speech, motion, governor, render and encode sentence by sentence, while the script is still
being written (DESIGN.md, "Streaming").

Three threads: the writer's (the script stage's events: its drafts carry each sentence as it is
final), the speech thread's (each sentence spoken as it arrives, ``speech.SpeechStream``), both in
``sentence_threads``, and the caller's, which plans the motion on the speech so far, governs it,
draws the frames that are final and feeds them with the speech into one ffmpeg cutting HLS
segments (``hls.HlsEncoder``). A frame is final once the speech runs ``motion.MOTION_LOOKAHEAD_S``
past it: motion is computed on the whole track's clock, so the frames drawn early are exactly
those of the finished track (the manifest's ``streamed_frames_match`` says so for every job). The
finished MP4 is the segments' packets copied, so the streamed and the finished video show the
same frames.

Streams: the embedded voices, motion and renderer (what runs on a plain CPU), and XTTS where it
runs on a GPU of its own (``xtts_streams``). SadTalker and GFPGAN jobs, and XTTS on a CPU or on
ZeroGPU, run stage after stage (``pipeline``).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from ..encode.hls import STREAM_DIR, HlsEncoder, StreamSegment
from ..errors import Cancelled, InputError, PersonaVideoError, StageError
from ..governor import GovernorConfig, govern
from ..jobs.folder import Job
from ..personas import Persona
from ..types import FPS, Speech, split_sentences
from .sentence_threads import SentenceThreads, speak_sentences, stop_if_cancelled, write_sentences

if TYPE_CHECKING:
    from ..render.stage import Portrait
    from ..types import BackendChoice, Request, StageEvent

logger = logging.getLogger(__name__)


def can_stream(backends: dict[str, BackendChoice]) -> bool:
    """True when every stage after the script can go sentence by sentence (``pipeline.choose_backends``):
    the embedded motion and renderer, and a voice that speaks a sentence sooner than it plays."""
    return (
        (backends["speech"].backend != "xtts" or xtts_streams())
        and backends["motion"].backend == "embedded"
        and backends["enhance"].backend == "none"
    )


#: "auto": XTTS streams on a GPU of this process's own; "1": also on a CPU; "0": never.
XTTS_STREAM_ENV = "PERSONA_VIDEO_XTTS_STREAM"


def xtts_streams(env: Mapping[str, str] | None = None) -> bool:
    """Whether an XTTS job goes sentence by sentence (``XTTS_STREAM_ENV``). By default only on a
    GPU of this process's own: on a CPU XTTS takes longer to speak a sentence than it plays, so the
    live player would stop at every sentence. Never on ZeroGPU, where the GPU is lent for a call
    and the whole script is spoken under one lease (``zerogpu.on_gpu``)."""
    from ..weights.runtime import cuda_device_name
    from ..zerogpu import on_zero_gpu

    env = os.environ if env is None else env
    value = env.get(XTTS_STREAM_ENV, "").strip().lower() or "auto"
    if value not in ("auto", "1", "0"):
        raise InputError(f"{XTTS_STREAM_ENV} = {value!r} is not auto, 1 or 0: set it to auto (stream XTTS on a GPU)")
    if on_zero_gpu(env) or value == "0":
        return False
    return value == "1" or cuda_device_name() is not None


class _Progress:
    """What the caller's thread has made so far."""

    def __init__(self) -> None:
        self.frames_done = 0
        self.sentence_ends: list[float] = []  # seconds where each spoken sentence's audio ends
        self.sentences_known = 0  # the script's sentences final so far (all of them once it is written)
        self.rendered: list[np.ndarray] = []  # governed coefficient rows as drawn
        # YUV 4:2:0 pictures as drawn, for the frame cache (a block as big as its budget, paged in as
        # it is written; None when the cache is off or the video outgrew it)
        self.store: np.ndarray | None = None
        self.seconds = {"speech": 0.0, "motion": 0.0, "governor": 0.0, "video": 0.0}
        self.speech: Speech | None = None
        self.track = None
        self.governed = None
        self.gains = None


def run_streamed(
    job: Job,
    request: Request,
    persona: Persona,
    config: GovernorConfig,
    portrait: Portrait,
    started: float,
    script_events: Iterator[StageEvent],
    cancel: threading.Event | None = None,
) -> Iterator[StageEvent]:
    """Every stage sentence by sentence: the script stage's events as they come, a ``chunk``
    event for each finished HLS segment (its StreamSegment), then the speech, motion, governor,
    video and done events of the finished job, with its files as a batch run writes them."""
    from ..speech import SpeechStream

    speech_stream = SpeechStream(
        persona,
        voice=request.voice,
        backend=request.speech_backend,
        speed=request.speed,
        seed=request.seed,
        reference_wav=request.reference_wav,
    )
    threads = SentenceThreads()
    progress = _Progress()
    animator = portrait.animator
    metadata = {"title": f"Persona Video ({request.persona})", "comment": "AI-generated talking-head video"}
    size = (animator.width, animator.height)
    encoder = HlsEncoder(job.path(STREAM_DIR), *size, sample_rate=speech_stream.sample_rate, metadata=metadata)
    encoding = False
    video_error: Exception | None = None  # the video failed: the speech goes on, to be kept
    threads.start("script-writer", write_sentences, threads, script_events)
    threads.start("speech", speak_sentences, threads, speech_stream, cancel)
    stage = "script"
    finished = False
    try:
        while not finished:
            kind, item = threads.next_report(cancel)
            if kind == "failed":
                stage = item.stage
                raise item.error
            if kind == "event":
                if item.stage == "script":
                    stage = "speech"
                    progress.sentences_known = len(split_sentences(item.result.intent))
                elif item.stage == "script_draft":
                    progress.sentences_known = max(progress.sentences_known, len(item.result.sentences))
                yield item
                continue
            chunk, speech, finished, seconds = item
            progress.seconds["speech"] += seconds
            _plan(request, persona, config, progress, speech)
            if video_error is not None:
                continue
            try:
                if not encoding:
                    encoder.__enter__()
                    encoding = True
                for segment in _draw(encoder, animator, progress, chunk, speech, finished):
                    yield _chunk_event(job, segment, started, progress)
                    stop_if_cancelled(cancel)
                segments = encoder.close() if finished else encoder.new_segments()
            except Cancelled:
                raise
            except Exception as e:  # noqa: BLE001  (kept, and raised once the speech is saved)
                video_error = e
                if encoding:
                    encoder.abort()
                continue
            for segment in segments:
                yield _chunk_event(job, segment, started, progress)
        yield from _save_stages(job, config, progress)
        stage = "video"
        if video_error is not None:
            raise video_error
        yield from _finish(job, encoder, portrait, progress, started)
    except Cancelled:
        if job.manifest.get("state") == "running":
            job.set_state("cancelled", cancelled_in=stage, finished=time.time())
        raise
    except GeneratorExit:  # the caller stopped listening (the page closed): later chunks stop
        job.set_state("cancelled", cancelled_in=stage, finished=time.time(), why="nobody was listening any more")
        raise
    except PersonaVideoError as e:
        if job.manifest.get("state") == "running":  # the script stage records its own failure
            job.fail(stage, str(e))
        raise
    except Exception as e:
        job.fail(stage, f"{type(e).__name__}: {e}")
        raise StageError(stage, f"{type(e).__name__}: {e}") from e
    finally:
        if cancel is not None and job.manifest.get("state") != "done":
            cancel.set()  # a model still writing stops at its next token, not after the whole script
        threads.close()
        if encoding:
            encoder.abort()  # nothing when it finished; stops ffmpeg when the job did not


def _plan(request: Request, persona: Persona, config: GovernorConfig, progress: _Progress, speech: Speech) -> None:
    """The motion planned and governed on everything spoken so far (its final frames are those
    of the finished track: ``motion.final_frames``)."""
    from ..motion.generator import generate_motion

    clock = time.perf_counter()
    track = generate_motion(speech, persona.motion, seed=request.seed, still=request.still)
    progress.seconds["motion"] += time.perf_counter() - clock
    clock = time.perf_counter()
    governed, gains = govern(track, speech.timing, config)
    progress.seconds["governor"] += time.perf_counter() - clock
    progress.speech, progress.track, progress.governed, progress.gains = speech, track, governed, gains


def _draw(
    encoder: HlsEncoder, animator: Any, progress: _Progress, chunk: Any, speech: Speech, finished: bool
) -> Iterator[StreamSegment]:
    """One more piece of speech into the stream, and the frames that are now final drawn and
    encoded; yields each segment ffmpeg finishes meanwhile, so the first one plays while the
    rest of a long sentence is still being drawn."""
    from ..motion.generator import final_frames
    from .video import SEGMENT_CHECK_FRAMES, render_ahead

    encoder.write_audio(chunk.audio)
    if not finished:
        progress.sentence_ends.append(speech.duration_s)
    governed = progress.governed
    assert governed is not None
    ready = (
        governed.num_frames
        if finished
        else min(final_frames(speech.duration_s, speech.timing.fps, False), governed.num_frames)
    )
    if ready <= progress.frames_done:
        return
    clock = time.perf_counter()
    rows = np.ascontiguousarray(governed.coeffs[progress.frames_done : ready], dtype=np.float32)
    if progress.frames_done == 0:
        from ..render.frame_cache import FRAMES

        progress.store = FRAMES.stream_block(animator.height, animator.width)
    if progress.store is not None and ready > len(progress.store):
        progress.store = None  # longer than the cache holds: not kept
    into = None if progress.store is None else progress.store[progress.frames_done : ready]
    progress.rendered.append(rows)
    for frame in render_ahead(animator, rows, into):
        encoder.write_yuv(frame)
        progress.frames_done += 1
        if progress.frames_done % SEGMENT_CHECK_FRAMES == 0:
            progress.seconds["video"] += time.perf_counter() - clock
            yield from encoder.new_segments()
            clock = time.perf_counter()
    progress.seconds["video"] += time.perf_counter() - clock


def _chunk_event(job: Job, segment: StreamSegment, started: float, progress: _Progress) -> StageEvent:
    """The event of a finished segment, with the sentence the renderer is drawing now."""
    from ..types import StageEvent

    drawn_s = progress.frames_done / FPS
    sentence = 1 + sum(end_s <= drawn_s for end_s in progress.sentence_ends)
    spoken = len(progress.sentence_ends)
    known = max(progress.sentences_known, spoken)
    segment = replace(segment, sentence=min(sentence, max(spoken, 1)), sentences=known)
    return StageEvent("chunk", job.job_id, "embedded", time.perf_counter() - started, segment)


def _save_stages(job: Job, config: GovernorConfig, progress: _Progress) -> Iterator[StageEvent]:
    """The finished speech, motion and governor: their files and events, as a batch run leaves them."""
    from ..speech.stage import save_speech
    from ..types import StageEvent

    speech, track, governed, gains = progress.speech, progress.track, progress.governed, progress.gains
    assert speech is not None and track is not None and governed is not None and gains is not None
    save_speech(job, speech)
    seconds = progress.seconds
    job.record_stage(
        "speech", speech.backend, seconds["speech"], voice=speech.voice, audio_s=round(speech.duration_s, 3)
    )
    job.add_notice(speech.notice)
    yield StageEvent("speech", job.job_id, speech.backend, seconds["speech"], speech, speech.notice)
    job.write_array("motion_raw.npy", track.coeffs)
    job.record_stage("motion", track.backend, seconds["motion"], frames=track.num_frames)
    yield StageEvent("motion", job.job_id, track.backend, seconds["motion"], track)
    job.write_array("motion_governed.npy", governed.coeffs)
    job.write_json("gains.json", {"config": config.to_dict(), "gains": [round(float(g), 4) for g in gains]})
    job.record_stage("governor", "numpy", seconds["governor"])
    yield StageEvent("governor", job.job_id, "numpy", seconds["governor"], (governed, gains, config))


def _finish(
    job: Job, encoder: HlsEncoder, portrait: Portrait, progress: _Progress, started: float
) -> Iterator[StageEvent]:
    """The finished video: the stream's packets into the job's MP4, its captions, the done event."""
    from ..encode.captions import write_webvtt
    from ..types import StageEvent
    from .video import reuse_notice as _reuse_notice

    speech, governed = progress.speech, progress.governed
    assert speech is not None and governed is not None
    clock = time.perf_counter()
    out = encoder.finish(job.path("video.mp4"))
    write_webvtt(speech.timing.spans, job.path("captions.vtt"))
    rendered = np.concatenate(progress.rendered) if progress.rendered else np.zeros((0, governed.coeffs.shape[1]))
    match = bool(np.array_equal(rendered, governed.coeffs))
    if not match:
        logger.warning("job %s: frames drawn while streaming differ from the finished motion", job.job_id)
    _keep_frames(job, portrait, governed.coeffs, progress.store, out)
    seconds = progress.seconds["video"] + time.perf_counter() - clock
    segments = len(list(job.path(STREAM_DIR).glob("seg_*.ts")))
    job.record_stage(
        "video", "embedded", seconds, frames=governed.num_frames, reused_frames=0,
        streamed_segments=segments, streamed_frames_match=match,
    )  # fmt: skip
    total = time.perf_counter() - started
    job.set_state("done", finished=time.time(), processing_time=round(total, 3))
    yield StageEvent("video", job.job_id, "embedded", seconds, out, _reuse_notice(0, governed))
    yield StageEvent("done", job.job_id, "", total, job)


def _keep_frames(job: Job, portrait: Portrait, coeffs: np.ndarray, store: np.ndarray | None, out) -> None:
    """The drawn frames into the frame cache, so a re-render draws only what its settings change."""
    from ..render.frame_cache import FRAMES, CachedRender, file_stamp

    key = (job.job_id, portrait.key)
    coeffs = np.ascontiguousarray(coeffs, dtype=np.float32)
    if store is not None and len(store) >= len(coeffs):
        FRAMES.put(CachedRender(key, coeffs.copy(), store[: len(coeffs)]))
    FRAMES.keep_video(key, coeffs, out.read_bytes(), file_stamp(out))


__all__ = ["XTTS_STREAM_ENV", "can_stream", "run_streamed", "xtts_streams"]
