"""SadTalker as the motion stage of a job (the seed's Stage 3): SadTalker's audio2coeff on the
job's audio.wav -> its coeff_3dmm .mat (T x 70) -> a MotionTrack whose reference is the
portrait's own coefficients. Its render side is ``render.sadtalker``; both drive the user's
checkout through ``weights.sadtalker_runner``. Working files live in ``<job>/sadtalker/``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..types import MotionTrack
from ..weights.sadtalker_runner import WORK_DIR, default_runner, read_coeff_mat

logger = logging.getLogger(__name__)

#: Longest portrait side handed to SadTalker, pixels. Its cropper shrinks a face whose
#: quad exceeds 2048 px with Pillow's ANTIALIAS filter, which Pillow 10 removed.
MAX_PORTRAIT_PX = 1024


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
    runner = default_runner()
    mat = runner.audio_to_coeff(wav_path, portrait_path, work, still=still, preprocess=framing)
    track = read_coeff_mat(mat, runner.source_mat(work))
    coeffs = _fit_frames(track.coeffs, num_frames)
    return MotionTrack(
        coeffs=coeffs, fps=track.fps, layout=track.layout, reference=track.reference, backend="sadtalker"
    )
