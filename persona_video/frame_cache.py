"""The most recently rendered frames, so a re-render draws only the frames whose motion changed.

The embedded renderer is a pure function of (portrait, framing, coefficient row): a frame whose
governed coefficients are bit-identical to the last render's is the same picture. Moving one
governor slider changes only the frames of one kind (pause, neutral or emphasis), and the
expression clamp and pose smoothing do nothing at all to compact-70 motion, so a re-render
after such a change reuses most or all of the frames instead of drawing them again.

Frames are kept as the encoder takes them (YUV 4:2:0, 1.5 bytes a pixel: 393 KB at 512x512)
for one job at a time, within ``PERSONA_VIDEO_FRAME_CACHE_MB`` (default 512 MB, about 50 s of
video; 0 turns the cache off). A longer video is simply not kept.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .settings import env_number

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


@dataclass
class CachedRender:
    """One job's last render: its coefficients (T, D) float32, its frames as one (T, H * 3 / 2, W)
    uint8 block of YUV 4:2:0 pictures, and the stamp of the video they were encoded into."""

    key: tuple[str, str]  # (job id, portrait key with framing)
    coeffs: np.ndarray
    frames: np.ndarray
    video_stamp: tuple[int, int] | None = None

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

    def put(self, entry: CachedRender) -> None:
        """Hold ``entry``, replacing any other."""
        with self._lock:
            self._entry = entry

    def clear(self) -> None:
        with self._lock:
            self._entry = None


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
