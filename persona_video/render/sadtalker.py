"""SadTalker as the render stage of a job: our governed track written back as a .mat ->
SadTalker's renderer -> its frames (re-encoded by our encoder: H.264 faststart, AAC, captions,
metadata), trimmed or padded to the timing map's frame count. Its motion side is
``motion.sadtalker``; both drive the user's checkout through ``weights.sadtalker_runner``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..types import MotionTrack
from ..weights.sadtalker_runner import WORK_DIR, default_runner, write_coeff_mat


def sadtalker_frames(
    job_folder: Path, wav_path: Path, track: MotionTrack, still: bool, framing: str, size: int = 256
) -> Iterator[np.ndarray]:
    """Render the governed track with SadTalker's renderer; yields exactly track.num_frames RGB frames."""
    import imageio_ffmpeg

    work = job_folder / WORK_DIR
    mat = write_coeff_mat(track, work / "governed.mat")
    runner = default_runner()
    video = runner.render(mat, wav_path, work / "portrait.png", work, still=still, preprocess=framing, size=size)
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    width, height = meta["size"]
    last = None
    count = 0
    for buffer in reader:
        if count == track.num_frames:
            break
        # H.264 yuv420p needs even sizes (a "full" render keeps the portrait's own size)
        last = np.frombuffer(buffer, dtype=np.uint8).reshape(height, width, 3)[: height // 2 * 2, : width // 2 * 2]
        count += 1
        yield last
    while last is not None and count < track.num_frames:
        count += 1
        yield last
