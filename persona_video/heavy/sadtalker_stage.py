"""SadTalker as the motion and render stages of a job (the seed's Stage 3).

motion: SadTalker's audio2coeff on the job's audio.wav -> its coeff_3dmm .mat
(T x 70) -> a MotionTrack whose reference is the portrait's own coefficients.
render: our governed track written back as a .mat -> SadTalker's renderer ->
its frames re-encoded by our encoder (H.264 faststart, AAC, captions,
metadata), trimmed or padded to the timing map's frame count.

Working files live in ``<job>/sadtalker/``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ..types import MotionTrack
from ..weights.registry import backend_dir, resolve_device, sadtalker_checkout
from .sadtalker import SadTalkerRunner, read_coeff_mat, write_coeff_mat

logger = logging.getLogger(__name__)

WORK_DIR = "sadtalker"
#: Longest portrait side handed to SadTalker, pixels. Its cropper shrinks a face whose
#: quad exceeds 2048 px with Pillow's ANTIALIAS filter, which Pillow 10 removed.
MAX_PORTRAIT_PX = 1024


def _runner() -> SadTalkerRunner:
    return SadTalkerRunner(sadtalker_checkout(), backend_dir("sadtalker"), device=resolve_device("auto"))


def _save_portrait(portrait: np.ndarray, path: Path) -> None:
    """The portrait as SadTalker reads it: a PNG no larger than MAX_PORTRAIT_PX on its longest side."""
    from PIL import Image

    image = Image.fromarray(portrait)
    scale = MAX_PORTRAIT_PX / max(image.size)
    if scale < 1.0:
        size = (max(2, round(image.width * scale)), max(2, round(image.height * scale)))
        image = image.resize(size, Image.Resampling.LANCZOS)
    image.save(path)


def _fit_frames(coeffs: np.ndarray, num_frames: int) -> np.ndarray:
    """Trim or edge-pad a (T, D) track to num_frames rows (SadTalker rounds the audio length its own way)."""
    if len(coeffs) >= num_frames:
        return coeffs[:num_frames]
    return np.concatenate([coeffs, np.repeat(coeffs[-1:], num_frames - len(coeffs), axis=0)])


def sadtalker_motion(
    job_folder: Path, wav_path: Path, portrait: np.ndarray, num_frames: int, still: bool, framing: str
) -> MotionTrack:
    """Coefficients for the job's audio from SadTalker's audio2coeff."""
    work = job_folder / WORK_DIR
    work.mkdir(exist_ok=True)
    portrait_path = work / "portrait.png"
    _save_portrait(portrait, portrait_path)
    runner = _runner()
    mat = runner.audio_to_coeff(wav_path, portrait_path, work, still=still, preprocess=framing)
    track = read_coeff_mat(mat, runner.source_mat(work))
    coeffs = _fit_frames(track.coeffs, num_frames)
    return MotionTrack(
        coeffs=coeffs, fps=track.fps, layout=track.layout, reference=track.reference, backend="sadtalker"
    )


def sadtalker_frames(
    job_folder: Path, wav_path: Path, track: MotionTrack, still: bool, framing: str, size: int = 256
) -> Iterator[np.ndarray]:
    """Render the governed track with SadTalker's renderer; yields exactly track.num_frames RGB frames."""
    import imageio_ffmpeg

    work = job_folder / WORK_DIR
    mat = write_coeff_mat(track, work / "governed.mat")
    runner = _runner()
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
