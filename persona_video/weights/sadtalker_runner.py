"""SadTalker motion and render, from a user-provided SadTalker checkout.

SadTalker's audio-to-coefficient step writes ``{portrait}##{audio}.mat`` holding
one key, ``coeff_3dmm``: float32 (T, 70) = expression 0:64, head angles 64:67,
translation 67:70, at 25 fps. Its face cropper writes the source portrait's own
``{portrait}.mat`` with ``coeff_3dmm`` float32 (1, 73) (the same 70 plus three
crop parameters 70:73) and ``full_3dmm`` (1, 257). Its renderer reads columns
``:70`` of the driving file, and ``:70`` (crop) or ``:73`` (full) of the source
file. The governor sits between the two: read -> govern -> write.

SadTalker runs in its own Python environment (its pins clash with ours), as a
subprocess with an argument list: ``sadtalker_driver.py`` calls its modules.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
from pathlib import Path

import numpy as np
import scipy.io

from persona_video.errors import BackendUnavailable, InputError, StageError
from persona_video.types import FPS, MotionTrack
from persona_video.weights.registry import SADTALKER_DIR_ENV, SADTALKER_PYTHON_ENV, WEIGHTS, backend_dir
from persona_video.weights.runtime import resolve_device, sadtalker_checkout, sadtalker_python

logger = logging.getLogger(__name__)

#: Key SadTalker stores coefficients under, in both its .mat files.
COEFF_KEY = "coeff_3dmm"
#: Sidecar the driver writes next to the coefficients: source .mat, cropped portrait, crop box.
SOURCE_INFO_NAME = "sadtalker_source.json"
RENDER_INFO_NAME = "sadtalker_render.json"
DRIVER = Path(__file__).with_name("sadtalker_driver.py")
#: The registry's required SadTalker files, relative to its folder (``checkpoints/sadtalker``).
SADTALKER_FILES = tuple(
    Path(w.relative_path).relative_to("sadtalker").as_posix()
    for w in WEIGHTS.values()
    if w.backend == "sadtalker" and w.required
)
#: A job's SadTalker working folder (``<job>/sadtalker/``).
WORK_DIR = "sadtalker"
#: Seconds one SadTalker step may take before it is stopped.
STEP_TIMEOUT_S = 3600


def _load_coeffs(path: Path) -> np.ndarray:
    try:
        data = scipy.io.loadmat(str(path))
    except (OSError, ValueError, TypeError, IndexError, scipy.io.matlab.MatReadError) as e:
        raise InputError(f"{path} is not a MATLAB .mat file ({e}): pass SadTalker's coeff_3dmm output") from e
    if COEFF_KEY not in data:
        keys = sorted(k for k in data if not k.startswith("__"))
        raise InputError(f"{path} has no '{COEFF_KEY}' array (keys: {keys}): pass SadTalker's coeff_3dmm output")
    coeffs = np.asarray(data[COEFF_KEY], dtype=np.float32)
    if coeffs.ndim != 2 or coeffs.shape[1] not in (70, 73):
        raise InputError(f"{path}: '{COEFF_KEY}' has shape {coeffs.shape}, SadTalker writes (T, 70) or (1, 73)")
    return coeffs


def read_coeff_mat(path: Path, source_mat: Path | None = None) -> MotionTrack:
    """Read a SadTalker ``coeff_3dmm`` .mat into a MotionTrack.

    path: (T, 70) driving coefficients (layout compact70) or a (T, 73) file
        with crop parameters (layout compact73).
    source_mat: the portrait's own (1, 73) .mat from SadTalker's cropper; its
        first row becomes the track's reference (the rest pose the governor
        scales motion around). Without it the reference is zeros.
    """
    coeffs = _load_coeffs(Path(path))
    dims = coeffs.shape[1]
    reference = np.zeros(dims, dtype=np.float32)
    if source_mat is not None:
        source = _load_coeffs(Path(source_mat))[0]
        reference[: min(dims, source.shape[0])] = source[:dims]
    return MotionTrack(
        coeffs=coeffs,
        fps=FPS,
        layout="compact70" if dims == 70 else "compact73",
        reference=reference,
        backend="sadtalker",
    )


def write_coeff_mat(track: MotionTrack, path: Path) -> Path:
    """Write a compact70/73 track as SadTalker's renderer reads it: {'coeff_3dmm': float32 (T, D)}."""
    if track.layout not in ("compact70", "compact73"):
        raise InputError(f"SadTalker's renderer reads compact 70/73 coefficients, not layout {track.layout!r}")
    if track.fps != FPS:
        raise InputError(f"SadTalker renders at {FPS} fps; this track is {track.fps} fps")
    coeffs = np.ascontiguousarray(track.coeffs, dtype=np.float32)
    if not np.isfinite(coeffs).all():
        raise InputError("motion coefficients contain NaN or infinity: re-run the governor with valid settings")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.mat")
    scipy.io.savemat(str(tmp), {COEFF_KEY: coeffs})
    os.replace(tmp, path)
    return path


class SadTalkerRunner:
    """SadTalker's audio-to-coefficient step and its renderer, run in its own environment.

    checkout_dir: a clone of OpenTalker/SadTalker.
    checkpoint_dir: the registry's sadtalker folder: SadTalker_V0.0.2_256/512.safetensors, the two mapping
        files and gfpgan/weights/ (its face detector and landmark models, which the driver links
        into each step's working folder, where SadTalker looks for them).
    device: "cuda" or "cpu" (passed to SadTalker's modules).
    python: SadTalker's interpreter; default from $PERSONA_VIDEO_SADTALKER_PYTHON or a venv in the checkout.
    """

    name = "sadtalker"

    def __init__(
        self, checkout_dir: Path | None, checkpoint_dir: Path, device: str = "cuda", python: Path | None = None
    ):
        checkout = Path(checkout_dir) if checkout_dir is not None else sadtalker_checkout()
        if checkout is None:
            raise BackendUnavailable(
                f"SadTalker needs a checkout: git clone OpenTalker/SadTalker and set {SADTALKER_DIR_ENV} "
                "to the clone's folder (its weights: python -m persona_video fetch sadtalker)"
            )
        if not (checkout / "inference.py").is_file() or not (checkout / "src" / "test_audio2coeff.py").is_file():
            raise BackendUnavailable(
                f"{checkout} is not a SadTalker checkout (no inference.py / src/test_audio2coeff.py): "
                f"set {SADTALKER_DIR_ENV} to a clone of OpenTalker/SadTalker"
            )
        checkpoint_dir = Path(checkpoint_dir)
        missing = [str(checkpoint_dir / f) for f in SADTALKER_FILES if not (checkpoint_dir / f).is_file()]
        if missing:
            raise BackendUnavailable(
                f"SadTalker weights missing: {', '.join(missing)}. Run `python -m persona_video fetch sadtalker` "
                "or set PERSONA_VIDEO_CHECKPOINTS to the folder that holds them"
            )
        self.python = Path(python) if python is not None else sadtalker_python(checkout)
        if not self.python.is_file():
            raise BackendUnavailable(f"SadTalker's Python {self.python} does not exist: set {SADTALKER_PYTHON_ENV}")
        self.checkout_dir = checkout
        self.checkpoint_dir = checkpoint_dir
        self.device = device

    def _run(self, step: str, args: list[str]) -> None:
        command = [str(self.python), str(DRIVER), step, "--checkout", str(self.checkout_dir), *args]
        logger.info("SadTalker %s: %s", step, " ".join(command))
        try:
            # the driver works in the step's --out-dir (SadTalker's relative paths land there)
            result = subprocess.run(command, capture_output=True, text=True, timeout=STEP_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired as e:
            raise StageError(
                "motion" if step == "coeff" else "render", f"SadTalker {step} ran over {STEP_TIMEOUT_S} s"
            ) from e
        if result.returncode != 0:
            raise StageError(
                "motion" if step == "coeff" else "render",
                f"SadTalker {step} exited with {result.returncode}: {result.stderr.strip()[-2000:]}",
            )

    def audio_to_coeff(
        self,
        wav_path: Path,
        portrait_path: Path,
        out_dir: Path,
        still: bool = False,
        preprocess: str = "crop",
        size: int = 256,
        pose_style: int = 0,
    ) -> Path:
        """Run SadTalker's cropper and audio2coeff. Returns the (T, 70) ``coeff_3dmm`` .mat.

        The portrait's own (1, 73) .mat and crop box are recorded in ``out_dir/sadtalker_source.json``
        for ``render`` and ``read_coeff_mat(..., source_mat=...)``.
        """
        if preprocess not in ("crop", "full"):
            raise InputError(f"SadTalker preprocess must be 'crop' or 'full', got {preprocess!r}")
        if size not in (256, 512):
            raise InputError(f"SadTalker renders at 256 or 512 px, got {size}")
        out_dir = Path(out_dir).resolve()
        out_dir.mkdir(parents=True, exist_ok=True)
        args = ["--checkpoint-dir", str(self.checkpoint_dir), "--audio", str(Path(wav_path).resolve())]
        args += ["--portrait", str(Path(portrait_path).resolve()), "--out-dir", str(out_dir)]
        args += [
            "--preprocess",
            preprocess,
            "--size",
            str(size),
            "--device",
            self.device,
            "--pose-style",
            str(pose_style),
        ]
        if still:
            args.append("--still")
        self._run("coeff", args)
        coeff_mat = Path(self._info(out_dir, SOURCE_INFO_NAME, "motion")["coeff_mat"])
        if not coeff_mat.is_file():
            raise StageError("motion", f"SadTalker wrote no coefficient file {coeff_mat}")
        return coeff_mat

    @staticmethod
    def _info(out_dir: Path, name: str, stage: str) -> dict:
        path = Path(out_dir) / name
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise StageError(stage, f"SadTalker left no readable {path}: {e}") from e

    def source_mat(self, out_dir: Path) -> Path:
        """The portrait's (1, 73) .mat recorded by ``audio_to_coeff`` in ``out_dir``."""
        return Path(self._info(out_dir, SOURCE_INFO_NAME, "motion")["source_mat"])

    def render(
        self,
        mat_path: Path,
        wav_path: Path,
        portrait_path: Path,
        out_dir: Path,
        still: bool = False,
        preprocess: str = "crop",
        size: int = 256,
        enhancer: str | None = None,
        batch_size: int = 2,
    ) -> Path:
        """Render a (governed) ``coeff_3dmm`` .mat to an MP4 with SadTalker's face renderer.

        preprocess "full" pastes the animated crop back into the whole portrait.
        enhancer: None or "gfpgan" (SadTalker's own GFPGAN pass, from its checkout).
        """
        if enhancer not in (None, "gfpgan"):
            raise InputError(f"SadTalker enhancer must be None or 'gfpgan', got {enhancer!r}")
        out_dir = Path(out_dir).resolve()
        if not (out_dir / SOURCE_INFO_NAME).is_file():
            raise InputError(f"{out_dir} has no {SOURCE_INFO_NAME}: run audio_to_coeff into this folder first")
        args = ["--checkpoint-dir", str(self.checkpoint_dir), "--coeff", str(Path(mat_path).resolve())]
        args += ["--audio", str(Path(wav_path).resolve()), "--portrait", str(Path(portrait_path).resolve())]
        args += ["--out-dir", str(out_dir), "--preprocess", preprocess, "--size", str(size), "--device", self.device]
        args += ["--batch-size", str(batch_size)]
        if still:
            args.append("--still")
        if enhancer:
            args += ["--enhancer", enhancer]
        self._run("render", args)
        video = Path(self._info(out_dir, RENDER_INFO_NAME, "render")["video"])
        if not video.is_file():
            raise StageError("render", f"SadTalker wrote no video {video}")
        return video


def default_runner() -> SadTalkerRunner:
    """The runner for the configured checkout and checkpoints, on the best device here."""
    return SadTalkerRunner(sadtalker_checkout(), backend_dir("sadtalker"), device=resolve_device("auto"))
