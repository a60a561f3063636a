"""The growing stream of a job: H.264/AAC MPEG-TS segments and their HLS playlist, written while
the video is still being drawn, and the finished MP4 made from the same segments.

One ffmpeg process takes the raw YUV 4:2:0 frames on its stdin and the speech as 16-bit PCM on a
second pipe, and cuts a segment at every forced keyframe (SEGMENT_S). One AAC encoder runs over
the whole track, so there is no priming gap or click at a join, which separately encoded
segments would have; one x264 with the same settings as ``encode.VideoEncoder``. The playlist
(``stream.m3u8``, EVENT type: it only grows) is what hls.js, Safari or the page's player read
while the job runs. ``finish`` copies the segments' packets into the job's faststart MP4 (no
re-encoding: the file has exactly the frames and audio that were streamed), starting at zero.

    with HlsEncoder(job.path("stream"), 512, 512, fps=25, sample_rate=24000, metadata=tags) as stream:
        stream.write_audio(samples)        # ahead of the frames it goes with
        stream.write_yuv(frame)
        for segment in stream.new_segments(): ...
    stream.finish(job.path("video.mp4"))
"""

from __future__ import annotations

import logging
import os
import queue
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import numpy as np

from ..errors import StageError
from ..jobs.folder import write_bytes_atomic
from ..types import FPS
from .encoder import AI_NOTICE, AUDIO_BITRATE, DEFAULT_CRF, DEFAULT_PRESET, X264_PARAMS
from .probe import _stderr_tail, ffmpeg_exe

logger = logging.getLogger(__name__)

#: Seconds of video per segment: a keyframe is forced at every multiple. The first segment can
#: play once it is complete, so this bounds how soon the video starts after its first frames.
SEGMENT_S = 1.0
PLAYLIST = "stream.m3u8"
#: The job's folder for the stream (the API serves its segments at /api/jobs/<id>/stream/<name>).
STREAM_DIR = "stream"
_SEGMENT_NAME = re.compile(r"^seg_\d{5}\.ts$")
_START = re.compile(r"Stream #0:\d+.*?: Video: .*?start (-?\d+(?:\.\d+)?)")


@dataclass(frozen=True)
class StreamSegment:
    """One finished segment: its index, its span on the video's clock, its file; while a job
    streams, the sentence being drawn when it was finished and the script's sentences final so
    far (all of them once the script is written)."""

    index: int
    start_s: float
    end_s: float
    path: Path
    sentence: int = 0  # 1-based; 0: not known (a re-render)
    sentences: int = 0

    @property
    def name(self) -> str:
        return self.path.name


def is_segment_name(name: str) -> bool:
    """True for a name this module gives segments (seg_00000.ts ...): what the API may serve."""
    return bool(_SEGMENT_NAME.match(name))


def read_playlist(folder: Path) -> tuple[list[StreamSegment], bool]:
    """(the segments the playlist in ``folder`` lists, in order; whether it has ended)."""
    try:
        text = (folder / PLAYLIST).read_text(encoding="utf-8")
    except OSError:
        return [], False
    segments: list[StreamSegment] = []
    clock, duration = 0.0, None
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("#EXTINF:"):
            duration = float(line[len("#EXTINF:") :].split(",")[0])
        elif line and not line.startswith("#") and duration is not None:
            name = line.rsplit("/", 1)[-1]
            segments.append(StreamSegment(len(segments), clock, clock + duration, folder / name))
            clock += duration
            duration = None
    return segments, "#EXT-X-ENDLIST" in text


class HlsEncoder:
    """Frames and speech in, growing HLS segments out (see the module's docstring).

    folder: where the playlist and segments go (emptied of an earlier stream first).
    width, height: frame size, both even. fps: frames per second.
    sample_rate: the speech's Hz (mono). metadata: tags for the finished MP4.
    threads: x264 threads (1: the renderer needs the other core).
    """

    def __init__(
        self,
        folder: Path,
        width: int,
        height: int,
        fps: int = FPS,
        sample_rate: int = 24000,
        metadata: dict[str, str] | None = None,
        threads: int = 1,
    ) -> None:
        if width <= 0 or height <= 0 or width % 2 or height % 2:
            raise StageError("encode", f"frame size {width}x{height} must be positive and even (H.264 yuv420p)")
        self.folder = Path(folder)
        self.width, self.height, self.fps, self.sample_rate = int(width), int(height), int(fps), int(sample_rate)
        self.metadata = dict(metadata or {})
        self.threads = int(threads)
        self.frames_written = 0
        self.samples_written = 0
        self._reported = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._stderr: IO[bytes] | None = None
        self._audio: queue.Queue[bytes | None] = queue.Queue()
        self._audio_thread: threading.Thread | None = None
        self._audio_error: BaseException | None = None

    def _command(self, audio_fd: int) -> list[str]:
        keyint = max(1, round(SEGMENT_S * self.fps))
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y"]
        command += ["-f", "rawvideo", "-pix_fmt", "yuv420p", "-s", f"{self.width}x{self.height}"]
        command += ["-framerate", str(self.fps), "-i", "pipe:0"]
        command += ["-f", "s16le", "-ar", str(self.sample_rate), "-ac", "1", "-i", f"pipe:{audio_fd}"]
        command += ["-map", "0:v:0", "-map", "1:a:0"]
        command += ["-c:v", "libx264", "-preset", DEFAULT_PRESET, "-crf", str(DEFAULT_CRF)]
        command += ["-threads", str(self.threads)]
        # a keyframe exactly every SEGMENT_S and never elsewhere: every segment starts on one
        command += ["-x264-params", f"{X264_PARAMS}:keyint={keyint}:min-keyint={keyint}:scenecut=0"]
        command += ["-pix_fmt", "yuv420p", "-colorspace", "smpte170m", "-color_range", "tv"]
        command += ["-c:a", "aac", "-b:a", AUDIO_BITRATE]
        command += ["-f", "hls", "-hls_time", str(SEGMENT_S), "-hls_list_size", "0", "-hls_playlist_type", "event"]
        command += ["-hls_flags", "independent_segments+temp_file"]
        command += ["-hls_segment_filename", str(self.folder / "seg_%05d.ts"), str(self.folder / PLAYLIST)]
        return command

    def __enter__(self) -> Self:
        if self.folder.exists():
            shutil.rmtree(self.folder)
        self.folder.mkdir(parents=True)
        read_end, write_end = os.pipe()
        self._stderr = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                self._command(read_end),
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                pass_fds=(read_end,),
            )
        except OSError as e:
            os.close(write_end)
            raise StageError("encode", f"could not start ffmpeg ({ffmpeg_exe()}): {e}") from e
        finally:
            os.close(read_end)
        self._audio_thread = threading.Thread(
            target=self._pump_audio, args=(write_end,), name="stream-audio", daemon=True
        )
        self._audio_thread.start()
        return self

    def _pump_audio(self, fd: int) -> None:
        """The audio pipe's own writer: ffmpeg reads the two inputs in step with each other, so
        a write on one may wait for the other; from one thread the two writes would deadlock."""
        with os.fdopen(fd, "wb") as pipe:
            while (data := self._audio.get()) is not None:
                try:
                    pipe.write(data)
                except (BrokenPipeError, ValueError) as e:
                    self._audio_error = e
                    while self._audio.get() is not None:  # drain, so writers never block
                        pass
                    return

    def write_audio(self, samples: np.ndarray) -> None:
        """Append mono float samples in [-1, 1] (write them ahead of the frames they go with)."""
        pcm = np.clip(np.asarray(samples, dtype=np.float32) * 32767.0, -32768, 32767).astype("<i2")
        self._audio.put(pcm.tobytes())
        self.samples_written += pcm.size

    def write_yuv(self, frame: np.ndarray) -> None:
        """Append one YUV 4:2:0 frame: uint8 (height * 3 / 2, width) (``encode.rgb_to_yuv``)."""
        process = self._process
        if process is None or process.stdin is None:
            raise StageError("encode", "write_yuv() called outside the 'with HlsEncoder(...)' block")
        expected = (self.height * 3 // 2, self.width)
        if frame.shape != expected or frame.dtype != np.uint8:
            raise StageError(
                "encode", f"YUV 4:2:0 frames must be uint8 of shape {expected}, got {frame.dtype} {frame.shape}"
            )
        try:
            process.stdin.write(np.ascontiguousarray(frame).data)
        except (BrokenPipeError, ValueError) as e:
            process.wait()
            raise StageError("encode", f"ffmpeg stopped reading frames: {self._stderr_text()}") from e
        self.frames_written += 1

    def new_segments(self) -> list[StreamSegment]:
        """The segments finished since the last call, in order."""
        segments, _ = read_playlist(self.folder)
        fresh = segments[self._reported :]
        self._reported = len(segments)
        return fresh

    def _stderr_text(self) -> str:
        if self._stderr is None:
            return ""
        self._stderr.seek(0)
        return _stderr_tail(self._stderr.read().decode("utf-8", errors="replace"))

    def close(self) -> list[StreamSegment]:
        """End both inputs and wait for ffmpeg; returns the segments not reported yet (the last
        ones). Raises StageError when ffmpeg failed."""
        process = self._process
        if process is None:
            raise StageError("encode", "close() called on a stream that is not running")
        self._audio.put(None)
        if process.stdin is not None:
            try:
                process.stdin.close()
            except BrokenPipeError:
                logger.debug("ffmpeg had already closed its video input")
        return_code = process.wait()
        if self._audio_thread is not None:
            self._audio_thread.join()
        self._process = None
        if return_code != 0 or self.frames_written == 0 or self._audio_error is not None:
            reason = "no frames were written" if self.frames_written == 0 else f"ffmpeg exited with {return_code}"
            raise StageError("encode", f"{reason} while streaming to {self.folder}: {self._stderr_text()}")
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        return self.new_segments()

    def abort(self) -> None:
        """Stop ffmpeg; the segments written so far stay (a cancelled job keeps what it made)."""
        process, self._process = self._process, None
        self._audio.put(None)
        if process is not None:
            process.kill()
            process.wait()
            if process.stdin is not None:
                try:
                    process.stdin.close()
                except BrokenPipeError:
                    pass
        if self._audio_thread is not None:
            self._audio_thread.join(timeout=5)
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()

    def finish(self, out: Path) -> Path:
        """The finished stream as one faststart MP4 at ``out`` (atomically): the segments' packets
        copied, the clock moved so the first frame is at zero. Call after ``close``."""
        return remux_stream(self.folder, out, self.metadata)


def _first_video_pts(segment: Path) -> float:
    """Where the first segment's video starts on the stream's clock (the MPEG-TS muxer's offset
    plus x264's reordering delay), read from ffmpeg's own account of the file."""
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-i", str(segment)], capture_output=True, text=True, check=False
    )
    found = _START.search(result.stderr)
    if found is None:
        raise StageError("encode", f"could not read where {segment.name} starts: {_stderr_tail(result.stderr)}")
    return float(found.group(1))


def remux_stream(folder: Path, out: Path, metadata: dict[str, str] | None = None) -> Path:
    """The segments listed in ``folder``'s playlist copied into one faststart MP4 at ``out``."""
    segments, ended = read_playlist(folder)
    if not segments or not ended:
        raise StageError("encode", f"the stream in {folder} is not finished: nothing to assemble")
    tags = dict(metadata or {})
    comment = tags.get("comment", "")
    tags["comment"] = f"{AI_NOTICE} video. {comment}".strip() if AI_NOTICE not in comment else comment
    start = _first_video_pts(segments[0].path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.partial.mp4")
    command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-copyts"]
    command += ["-allowed_extensions", "ALL", "-i", str(folder / PLAYLIST), "-map", "0:v:0", "-map", "0:a:0"]
    command += ["-c", "copy", "-output_ts_offset", f"{-start:.6f}"]
    for key, value in tags.items():
        command += ["-metadata", f"{key}={value}"]
    command += ["-movflags", "+faststart", "-f", "mp4", str(tmp)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        tmp.unlink(missing_ok=True)
        raise StageError("encode", f"could not assemble {out.name} from the stream: {_stderr_tail(result.stderr)}")
    os.replace(tmp, out)
    return out


def concatenated_segments(folder: Path, out: Path) -> Path:
    """The stream's segments joined byte for byte (what a player that read them in turn got)."""
    segments, _ = read_playlist(folder)
    write_bytes_atomic(out, b"".join(s.path.read_bytes() for s in segments))
    return out
