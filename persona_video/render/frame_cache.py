"""The most recently rendered frames, so a re-render draws only the frames whose motion changed.

The embedded renderer is a pure function of (portrait, framing, coefficient row): a frame whose
governed coefficients are bit-identical to the last render's is the same picture. Moving one
governor slider changes only the frames of one kind (pause, neutral or emphasis), and the
expression clamp and pose smoothing do nothing at all to compact-70 motion, so a re-render
after such a change reuses most or all of the frames instead of drawing them again.

Frames are kept as the encoder takes them (YUV 4:2:0, 1.5 bytes a pixel: 393 KB at 512x512)
for one job at a time, within ``PERSONA_VIDEO_FRAME_CACHE_MB`` (default 512 MB, about 50 s of
video; 0 turns the cache off). A longer video is simply not kept.

The encoded videos of the last few renders are kept too (about 1 MB for 30 s), keyed by the
coefficients that made them: switching the governor off and on again, or a slider back to
where it was, gives back that render's video without drawing or encoding anything.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..settings import env_number

DEFAULT_BUDGET_MB = 512


def budget_bytes() -> int:
    """PERSONA_VIDEO_FRAME_CACHE_MB in bytes (default 512 MB; 0 disables the cache)."""
    megabytes = env_number("PERSONA_VIDEO_FRAME_CACHE_MB", DEFAULT_BUDGET_MB, example="512, or 0 for off", minimum=0)
    return int(megabytes * 1024 * 1024)


def file_stamp(path: Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, or None when it is missing: tells whether a video is still
    the one a cached render wrote."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_size, stat.st_mtime_ns


#: Encoded videos kept for going back to an earlier setting: at most this many, and this many bytes.
KEPT_VIDEOS = 8
KEPT_VIDEO_BYTES = 64 * 1024 * 1024


@dataclass
class CachedRender:
    """One job's last render: its coefficients (T, D) float32 and its frames as one
    (T, H * 3 / 2, W) uint8 block of YUV 4:2:0 pictures."""

    key: tuple[str, str]  # (job id, portrait key with framing)
    coeffs: np.ndarray
    frames: np.ndarray

    def same_rows(self, coeffs: np.ndarray) -> np.ndarray:
        """(T,) bool: which rows of ``coeffs`` are bit-identical to the cached ones (all False when
        the shapes differ)."""
        if coeffs.shape != self.coeffs.shape:
            return np.zeros(len(coeffs), dtype=bool)
        return np.all(self.coeffs == coeffs, axis=1)


class FrameCache:
    """Holds the last render of one job (thread-safe). A render takes the entry out while it
    draws into it, so a render that fails leaves nothing half-written behind."""

    def __init__(self) -> None:
        self._entry: CachedRender | None = None
        # (key, digest of the coefficients) -> (the MP4's bytes, stamp of the file last written with them)
        self._videos: OrderedDict[tuple, tuple[bytes, tuple[int, int] | None]] = OrderedDict()
        self._lock = threading.Lock()

    def checkout(
        self, key: tuple[str, str], coeffs: np.ndarray, height: int, width: int
    ) -> tuple[CachedRender | None, np.ndarray, np.ndarray | None]:
        """Take the held render out for a render of ``key`` with ``coeffs`` (T, D) at height x width.

        Returns (the entry, when it is this key's with the same frame layout, else None;
        (T,) bool, the rows whose frames can be taken from the store as they are; the store to
        draw every other frame into, or None when T frames would not fit the budget). Another
        job's block is drawn into when it is big enough (its memory is already paged in);
        otherwise it is dropped before a new one is made.
        """
        with self._lock:
            entry, self._entry = self._entry, None
        frame_shape = (height * 3 // 2, width)
        budget = budget_bytes()
        if entry is not None and entry.frames.nbytes <= budget:
            if entry.key == key and entry.frames.shape == (len(coeffs), *frame_shape):
                return entry, entry.same_rows(coeffs), entry.frames
            base = entry.frames.base if isinstance(entry.frames.base, np.ndarray) else entry.frames
            if base.shape[1:] == frame_shape and base.shape[0] >= len(coeffs):
                return None, np.zeros(len(coeffs), dtype=bool), base[: len(coeffs)]
        entry = None  # the only reference: its memory goes back before a new block is made
        return None, np.zeros(len(coeffs), dtype=bool), frame_store(len(coeffs), height, width)

    def stream_block(self, height: int, width: int) -> np.ndarray | None:
        """A block for a streamed render's frames, whose count is not known when it starts: as
        many frames as the budget holds (the memory comes in only as frames are written into it),
        the held render's block when it is that big (it is taken out), or None with the cache off."""
        with self._lock:
            entry, self._entry = self._entry, None
        frame_shape = (height * 3 // 2, width)
        capacity = budget_bytes() // (frame_shape[0] * frame_shape[1])
        if capacity <= 0:
            return None
        if entry is not None:
            base = entry.frames.base if isinstance(entry.frames.base, np.ndarray) else entry.frames
            if base.shape[1:] == frame_shape and base.shape[0] >= capacity:
                return base[:capacity]
        entry = None  # the only reference: its memory goes back before a new block is made
        return np.empty((capacity, *frame_shape), dtype=np.uint8)

    def put(self, entry: CachedRender) -> None:
        """Hold ``entry``, replacing any other."""
        with self._lock:
            self._entry = entry

    def clear(self) -> None:
        with self._lock:
            self._entry = None
            self._videos.clear()

    @staticmethod
    def _video_key(key: tuple[str, str], coeffs: np.ndarray) -> tuple:
        return key, coeffs.shape, hashlib.sha1(np.ascontiguousarray(coeffs, dtype=np.float32).tobytes()).hexdigest()

    def kept_video(self, key: tuple[str, str], coeffs: np.ndarray) -> tuple[bytes, tuple[int, int] | None] | None:
        """(the MP4 a render of ``key`` with exactly ``coeffs`` made, the stamp of the file last
        written with it), or None when none is kept."""
        with self._lock:
            found = self._videos.get(self._video_key(key, coeffs))
            if found is not None:
                self._videos.move_to_end(self._video_key(key, coeffs))
            return found

    def keep_video(self, key: tuple[str, str], coeffs: np.ndarray, data: bytes, stamp: tuple[int, int] | None) -> None:
        """Keep the MP4 ``data`` that ``coeffs`` made for ``key`` (and the stamp of the file holding
        it now), dropping the oldest beyond KEPT_VIDEOS or KEPT_VIDEO_BYTES; nothing when the cache is off."""
        if budget_bytes() == 0 or len(data) > KEPT_VIDEO_BYTES:
            return
        with self._lock:
            self._videos[self._video_key(key, coeffs)] = (data, stamp)
            self._videos.move_to_end(self._video_key(key, coeffs))
            while len(self._videos) > KEPT_VIDEOS or sum(len(d) for d, _ in self._videos.values()) > KEPT_VIDEO_BYTES:
                self._videos.popitem(last=False)


#: New blocks hold a multiple of this many frames (10 s at 25 fps), so the next job, of a
#: similar length, can draw into the same memory.
BLOCK_FRAMES = 250


def frame_store(num_frames: int, height: int, width: int) -> np.ndarray | None:
    """A (num_frames, height * 3 / 2, width) uint8 view of a new block for a render's frames,
    holding a multiple of BLOCK_FRAMES where that fits, or None when num_frames would exceed the
    budget. One block, so its memory comes in huge pages: far fewer page faults than an array
    per frame."""
    frame_bytes = height * 3 // 2 * width
    budget = budget_bytes()
    if num_frames <= 0 or num_frames * frame_bytes > budget:
        return None
    capacity = -(-num_frames // BLOCK_FRAMES) * BLOCK_FRAMES
    if capacity * frame_bytes > budget:
        capacity = num_frames
    return np.empty((capacity, height * 3 // 2, width), dtype=np.uint8)[:num_frames]


#: The process's cache, shared by the page, the API and the CLI.
FRAMES = FrameCache()
