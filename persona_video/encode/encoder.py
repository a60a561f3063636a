"""Encode: rendered frames + speech -> H.264/AAC MP4, and WebVTT captions.

ffmpeg comes from ``imageio-ffmpeg`` (a static build inside the wheel, nothing
to install). Frames are converted to YUV 4:2:0 (BT.601, limited range, what
ffmpeg itself would do) on the caller's side and streamed into ffmpeg's stdin
while the renderer is still producing them, so encoding overlaps rendering; on
the 2-core target machine x264 therefore gets one thread by default. A
re-render copies the AAC track of the job's previous video instead of
encoding the same speech again.

Every output is written atomically: ffmpeg writes a hidden temporary file in
the same folder, which replaces the target only when ffmpeg succeeded. Reading
a file back as a player sees it is ``persona_video.encode.probe``.
"""

from __future__ import annotations

import logging
import os
import subprocess
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import cv2
import numpy as np

from ..errors import InputError, StageError
from ..types import FPS
from ..wav import write_wav
from .captions import webvtt_cues, write_webvtt  # noqa: F401  (re-exported)
from .probe import _stderr_tail, ffmpeg_exe, has_aac_track

logger = logging.getLogger(__name__)

#: The marker every video carries in its metadata comment.
AI_NOTICE = "AI-generated"
#: x264 speed preset; veryfast measured as the best size/speed trade for talking heads at 512x512.
DEFAULT_PRESET = "veryfast"
#: x264 constant rate factor (lower = better quality, bigger file), 0..51.
DEFAULT_CRF = 20
#: On top of the preset: one-pass subpixel refinement, no sub-block partitions, diamond motion
#: search, fixed B-frame placement. Measured on a 27 s talking head at 512x512, one core: 1.01 s
#: against 1.59 s for plain veryfast, the file 2 % bigger, SSIM 0.983 against 0.984. Re-rendering
#: waits on this encoder, so a third of its time is worth the hundredth of SSIM.
X264_PARAMS = "subme=1:partitions=none:me=dia:b-adapt=0"
AUDIO_BITRATE = "128k"


def rgb_to_yuv(frame: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H * 3 / 2, W) uint8 planar YUV 4:2:0, BT.601 limited range: the
    conversion ffmpeg would make (and players assume for this size), done on the caller's thread.
    out: an array of that shape to write into (returned), or None for a new one."""
    if out is None:
        return cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420)
    cv2.cvtColor(frame, cv2.COLOR_RGB2YUV_I420, dst=out)
    return out


class VideoEncoder:
    """Streams RGB frames into an MP4 (H.264 yuv420p + AAC, faststart).

    Use as a context manager::

        with VideoEncoder(out_path, 512, 512, fps=25, audio=speech.audio, sample_rate=speech.sample_rate) as enc:
            for frame in frames:
                enc.write(frame)

    out_path: the .mp4 to create (replaced atomically on success).
    width, height: frame size in pixels, both even (yuv420p needs it).
    fps: frames per second.
    audio: float32 mono samples (num_samples,) in [-1, 1], or None for no sound.
    sample_rate: audio Hz.
    metadata: extra tags, e.g. {"title": ...}; the comment always says AI-generated.
    threads: x264 threads (1 by default: the renderer needs the other core).
    audio_copy_from: an earlier MP4 of the same speech (a re-render): its AAC track is copied
        instead of encoding ``audio`` again, when it has one; ``audio`` is used otherwise.
    The video holds exactly the frames written; the audio is never cut.
    """

    def __init__(
        self,
        out_path: str | os.PathLike[str],
        width: int,
        height: int,
        fps: int = FPS,
        audio: np.ndarray | None = None,
        sample_rate: int | None = None,
        metadata: dict[str, str] | None = None,
        threads: int = 1,
        preset: str = DEFAULT_PRESET,
        crf: int = DEFAULT_CRF,
        audio_copy_from: str | os.PathLike[str] | None = None,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise StageError("encode", f"frame size {width}x{height} must be positive and even (H.264 yuv420p)")
        if audio is not None and (sample_rate is None or sample_rate <= 0):
            raise StageError("encode", "audio given without a positive sample_rate")
        self.out_path = Path(out_path)
        self.width, self.height, self.fps = int(width), int(height), int(fps)
        self.audio, self.sample_rate = audio, sample_rate
        self.metadata = dict(metadata or {})
        self.threads, self.preset, self.crf = int(threads), preset, int(crf)
        self.audio_copy_from = Path(audio_copy_from) if audio_copy_from is not None else None
        self._copy_audio = False  # decided on entry: the earlier file has an AAC track
        self._yuv = np.empty((self.height * 3 // 2, self.width), dtype=np.uint8)
        self.frames_written = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr_file: IO[bytes] | None = None
        self._tmp_video = self.out_path.with_name(f".{self.out_path.stem}.partial.mp4")
        self._tmp_wav = self.out_path.with_name(f".{self.out_path.stem}.audio.wav")

    def _command(self) -> list[str]:
        comment = self.metadata.get("comment", "")
        comment = f"{AI_NOTICE} video. {comment}".strip() if AI_NOTICE not in comment else comment
        tags = {**self.metadata, "comment": comment}
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
        command += ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{self.width}x{self.height}"]
        command += ["-framerate", str(self.fps), "-i", "pipe:0"]
        if self._copy_audio:
            command += ["-i", str(self.audio_copy_from), "-map", "0:v:0", "-map", "1:a:0"]
        elif self.audio is not None:
            command += ["-i", str(self._tmp_wav), "-map", "0:v:0", "-map", "1:a:0"]
        command += ["-c:v", "libx264", "-preset", self.preset, "-crf", str(self.crf), "-threads", str(self.threads)]
        command += ["-x264-params", X264_PARAMS, "-pix_fmt", "yuv420p", "-colorspace", "smpte170m"]
        command += ["-color_range", "tv"]
        if self._copy_audio:
            command += ["-c:a", "copy"]
        elif self.audio is not None:
            command += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
        for key, value in tags.items():
            command += ["-metadata", f"{key}={value}"]
        command += ["-movflags", "+faststart", "-f", "mp4", str(self._tmp_video)]
        return command

    def __enter__(self) -> Self:
        self.out_path.parent.mkdir(parents=True, exist_ok=True)
        self._copy_audio = self.audio_copy_from is not None and has_aac_track(self.audio_copy_from)
        if self.audio is not None and not self._copy_audio:
            try:
                write_wav(self._tmp_wav, self.audio, int(self.sample_rate or 0))
            except InputError as e:
                raise StageError("encode", str(e)) from e
        self._stderr_file = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                self._command(), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr_file
            )
        except OSError as e:
            self._cleanup(remove_video=True)
            raise StageError("encode", f"could not start ffmpeg ({ffmpeg_exe()}): {e}") from e
        return self

    def write_yuv(self, frame: np.ndarray) -> None:
        """Append one frame already in YUV 4:2:0 (``rgb_to_yuv``): uint8 (height * 3 / 2, width)."""
        if self._process is None or self._process.stdin is None:
            raise StageError("encode", "write_yuv() called outside the 'with VideoEncoder(...)' block")
        expected = (self.height * 3 // 2, self.width)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise StageError(
                "encode", f"YUV 4:2:0 frames must be uint8 of shape {expected}, got {frame.dtype} {frame.shape}"
            )
        self._pipe(np.ascontiguousarray(frame).data)
        self.frames_written += 1

    def write(self, frame: np.ndarray) -> None:
        """Append one uint8 RGB frame, shape (height, width, 3)."""
        self.write_batch(np.asarray(frame)[None])

    def write_batch(self, frames: np.ndarray) -> None:
        """Append uint8 RGB frames, shape (N, height, width, 3), converted to YUV 4:2:0 (BT.601, limited range)."""
        if self._process is None or self._process.stdin is None:
            raise StageError("encode", "write() called outside the 'with VideoEncoder(...)' block")
        frames = np.asarray(frames)
        expected = (self.height, self.width, 3)
        if frames.ndim != 4 or frames.shape[1:] != expected or frames.dtype != np.uint8:
            raise StageError(
                "encode",
                f"frames must be uint8 of shape (N, {self.height}, {self.width}, 3), got {frames.dtype} {frames.shape}",
            )
        for frame in frames:
            self._pipe(rgb_to_yuv(frame, self._yuv).data)
            self.frames_written += 1

    def _pipe(self, data: memoryview) -> None:
        assert self._process is not None and self._process.stdin is not None
        try:
            self._process.stdin.write(data)
        except (BrokenPipeError, ValueError) as e:
            self._process.wait()
            message = self._read_stderr()
            self._cleanup(remove_video=True)
            raise StageError("encode", f"ffmpeg stopped reading frames: {message}") from e

    def _read_stderr(self) -> str:
        if self._stderr_file is None:
            return ""
        self._stderr_file.seek(0)
        return _stderr_tail(self._stderr_file.read().decode("utf-8", errors="replace"))

    def _cleanup(self, remove_video: bool) -> None:
        if remove_video:
            self._tmp_video.unlink(missing_ok=True)
        self._tmp_wav.unlink(missing_ok=True)
        if self._stderr_file is not None:
            self._stderr_file.close()
            self._stderr_file = None
        self._process = None

    def close(self) -> Path:
        """Finish the file and move it into place; returns out_path. Raises StageError on an ffmpeg failure."""
        process = self._process
        if process is None:
            raise StageError("encode", "close() called on an encoder that is not running")
        if process.stdin is not None:
            try:
                process.stdin.close()
            except BrokenPipeError:
                logger.debug("ffmpeg had already closed its input")
        return_code = process.wait()
        if return_code != 0 or self.frames_written == 0:
            reason = "no frames were written" if self.frames_written == 0 else f"ffmpeg exited with {return_code}"
            message = self._read_stderr()
            self._cleanup(remove_video=True)
            raise StageError("encode", f"{reason} while writing {self.out_path.name}: {message}")
        os.replace(self._tmp_video, self.out_path)
        self._cleanup(remove_video=False)
        logger.info("encoded %d frames to %s", self.frames_written, self.out_path)
        return self.out_path

    def abort(self) -> None:
        """Stop ffmpeg and remove every temporary file; the target is left as it was."""
        process = self._process
        if process is not None:
            process.kill()
            process.wait()
            if process.stdin is not None:
                process.stdin.close()
        self._cleanup(remove_video=True)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        self.close()


def encode_video(
    frames: Iterable[np.ndarray],
    audio: np.ndarray | None,
    sample_rate: int | None,
    out_path: str | os.PathLike[str],
    fps: int = FPS,
    metadata: dict[str, str] | None = None,
    threads: int = 1,
    preset: str = DEFAULT_PRESET,
) -> Path:
    """Encode uint8 RGB frames (each (H, W, 3)) and mono audio into an MP4; returns its path.

    The frame size is taken from the first frame.
    """
    iterator = iter(frames)
    try:
        first = np.asarray(next(iterator))
    except StopIteration as e:
        raise StageError("encode", f"no frames to encode into {out_path}") from e
    if first.ndim != 3:
        raise StageError("encode", f"frames must be (H, W, 3) RGB, got shape {first.shape}")
    height, width = first.shape[:2]
    with VideoEncoder(out_path, width, height, fps, audio, sample_rate, metadata, threads, preset) as encoder:
        encoder.write(first)
        for frame in iterator:
            encoder.write(frame)
    return Path(out_path)


# ---------------------------------------------------------------- bench


def bench_encode(num_frames: int = 625, size: int = 512, preset: str = DEFAULT_PRESET, threads: int = 1) -> dict:
    """Encode num_frames talking-head-like frames (size x size) with a tone; returns timing.

    Frames are made before the clock starts, so the figure is ffmpeg's speed
    (plus piping). Measured on the shared 2-core machine (load ~3), one x264
    thread, 512x512, veryfast: about 330 frames/s on this content, about 600 on
    the astronaut portrait with a moving mouth patch, about 190 when every pixel
    moves. "faster" is ~1.4x slower for 6 % smaller files; "superfast" doubles
    the size. Returns {"frames", "size", "preset", "threads", "seconds", "fps", "bytes"}.
    """
    sample_rate = 24000
    duration_s = num_frames / FPS
    audio = (0.2 * np.sin(2 * np.pi * 220 * np.arange(int(duration_s * sample_rate)) / sample_rate)).astype(np.float32)
    # talking-head-like content: a still textured picture with one mouth-sized patch moving
    rows, cols = np.mgrid[0:size, 0:size]
    texture = (24 * np.sin(rows / 7.0) * np.cos(cols / 11.0)).astype(np.int64) + 24  # smooth detail, like skin and hair
    still = np.stack([(cols + texture) % 256, (rows + texture) % 256, (cols + rows) // 4 % 256], -1).astype(np.uint8)
    patch_top, patch_left, patch_h, patch_w = size * 6 // 10, size * 4 // 10, size // 8, size // 4
    frames = []
    for i in range(min(num_frames, 50)):
        frame = still.copy()
        shift = round(6 * np.sin(i / 3))
        frame[patch_top + shift : patch_top + shift + patch_h, patch_left : patch_left + patch_w] = still[
            patch_top : patch_top + patch_h, patch_left + 8 : patch_left + 8 + patch_w
        ]
        frames.append(frame)
    with tempfile.TemporaryDirectory() as folder:
        out_path = Path(folder) / "bench.mp4"
        start = time.perf_counter()
        with VideoEncoder(out_path, size, size, FPS, audio, sample_rate, threads=threads, preset=preset) as encoder:
            for i in range(num_frames):
                encoder.write(frames[i % len(frames)])
        seconds = time.perf_counter() - start
        size_bytes = out_path.stat().st_size
    return {
        "frames": num_frames,
        "size": size,
        "preset": preset,
        "threads": threads,
        "seconds": round(seconds, 3),
        "fps": round(num_frames / seconds, 1),
        "bytes": size_bytes,
    }
