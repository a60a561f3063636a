"""The one weights registry: name -> relative path under the checkpoints folder.

The folder is ``checkpoints/`` beside the package, or the folder named by the
environment variable ``PERSONA_VIDEO_CHECKPOINTS``. Nothing here downloads:
``checkpoints/README.md`` says where each file comes from.

``backend_status()`` tells, for each heavy backend, whether it can run here
and exactly why not (missing file with its full path, missing package, no
CUDA). It never imports torch unless torch is installed, so the core install
stays torch-free.
"""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from persona_video.errors import BackendUnavailable

logger = logging.getLogger(__name__)

#: Environment variable that points at another checkpoints folder.
CHECKPOINTS_ENV = "PERSONA_VIDEO_CHECKPOINTS"
#: Environment variable with the path of a SadTalker checkout (its git clone).
SADTALKER_DIR_ENV = "PERSONA_VIDEO_SADTALKER_DIR"
#: Environment variable with the Python interpreter of SadTalker's own environment.
SADTALKER_PYTHON_ENV = "PERSONA_VIDEO_SADTALKER_PYTHON"

DEFAULT_CHECKPOINTS_DIR = Path(__file__).resolve().parents[2] / "checkpoints"


@dataclass(frozen=True)
class Weight:
    """One weights file: which backend needs it and where it lives under the checkpoints folder."""

    name: str
    backend: str
    relative_path: str
    description: str


_WEIGHT_LIST = (
    Weight("xtts_model", "xtts", "xtts_v2/model.pth", "XTTS v2 model (GPT + HiFi-GAN decoder)"),
    Weight("xtts_config", "xtts", "xtts_v2/config.json", "XTTS v2 model config"),
    Weight("xtts_vocab", "xtts", "xtts_v2/vocab.json", "XTTS v2 BPE tokenizer vocabulary"),
    Weight("xtts_speakers", "xtts", "xtts_v2/speakers_xtts.pth", "XTTS v2 built-in speaker latents"),
    Weight("sadtalker_256", "sadtalker", "sadtalker/SadTalker_V0.0.2_256.safetensors", "SadTalker 256 px models"),
    Weight("sadtalker_512", "sadtalker", "sadtalker/SadTalker_V0.0.2_512.safetensors", "SadTalker 512 px models"),
    Weight("sadtalker_mapping_full", "sadtalker", "sadtalker/mapping_00109-model.pth.tar", "mapping net, full"),
    Weight("sadtalker_mapping_crop", "sadtalker", "sadtalker/mapping_00229-model.pth.tar", "mapping net, crop"),
    Weight("gfpgan", "gfpgan", "gfpgan/GFPGANv1.4.pth", "GFPGAN v1.4 face restorer (GFPGANv1Clean)"),
)

#: name -> Weight, the registry itself.
WEIGHTS: dict[str, Weight] = {w.name: w for w in _WEIGHT_LIST}

#: Heavy backend -> (pipeline stage, Python modules it imports, whether CPU is acceptable).
HEAVY_BACKENDS: dict[str, tuple[str, tuple[str, ...], bool]] = {
    "xtts": ("speech", ("torch", "TTS", "six"), True),
    "sadtalker": ("motion/render", (), False),
    "gfpgan": ("enhance", ("torch", "spandrel"), True),
}

#: Files inside the SadTalker checkout that its face cropper loads from the working directory.
SADTALKER_CHECKOUT_FILES = (
    "inference.py",
    "src/test_audio2coeff.py",
    "src/config/facerender.yaml",
    "gfpgan/weights/alignment_WFLW_4HG.pth",
    "gfpgan/weights/detection_Resnet50_Final.pth",
)


def checkpoints_dir() -> Path:
    """The checkpoints folder: $PERSONA_VIDEO_CHECKPOINTS or ``checkpoints/`` beside the package."""
    override = os.environ.get(CHECKPOINTS_ENV, "").strip()
    return Path(override).expanduser().resolve() if override else DEFAULT_CHECKPOINTS_DIR


def weight_path(name: str, root: Path | None = None) -> Path:
    """Full path of a registered weights file (it may not exist)."""
    if name not in WEIGHTS:
        raise KeyError(f"unknown weights name {name!r}: known names are {', '.join(WEIGHTS)}")
    return (root or checkpoints_dir()) / WEIGHTS[name].relative_path


def backend_dir(backend: str, root: Path | None = None) -> Path:
    """Folder holding one backend's files, e.g. ``checkpoints/xtts_v2``."""
    first = next(w for w in _WEIGHT_LIST if w.backend == backend)
    return (root or checkpoints_dir()) / Path(first.relative_path).parent


def missing_weights(backend: str, root: Path | None = None) -> list[Path]:
    """Full paths of the backend's registered files that are not there."""
    return [
        weight_path(w.name, root)
        for w in _WEIGHT_LIST
        if w.backend == backend and not weight_path(w.name, root).is_file()
    ]


def require_weights(backend: str, root: Path | None = None) -> None:
    """Raise BackendUnavailable naming every missing file of ``backend`` and how to provide it."""
    missing = missing_weights(backend, root)
    if missing:
        raise BackendUnavailable(
            f"{backend} weights missing: {', '.join(str(p) for p in missing)}. "
            f"Put the files there (see checkpoints/README.md) or set {CHECKPOINTS_ENV} to the folder that holds them."
        )


def missing_packages(modules: tuple[str, ...]) -> list[str]:
    """Import names among ``modules`` that are not installed (found without importing them)."""
    return [m for m in modules if importlib.util.find_spec(m) is None]


@functools.lru_cache(maxsize=1)
def cuda_device_name() -> str | None:
    """Name of the first CUDA GPU, or None (also None when torch is not installed)."""
    if importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return str(torch.cuda.get_device_name(0))


def resolve_device(device: str) -> str:
    """'auto' -> 'cuda' when a GPU is there else 'cpu'; 'cuda' without a GPU is an error."""
    if device == "auto":
        return "cuda" if cuda_device_name() else "cpu"
    if device.startswith("cuda") and cuda_device_name() is None:
        raise BackendUnavailable("device 'cuda' was asked for but no CUDA GPU is visible: use device 'cpu' or 'auto'")
    if device != "cpu" and not device.startswith("cuda"):
        raise BackendUnavailable(f"unknown device {device!r}: use 'auto', 'cpu' or 'cuda'")
    return device


def sadtalker_checkout() -> Path | None:
    """The SadTalker checkout from $PERSONA_VIDEO_SADTALKER_DIR, or None when unset."""
    value = os.environ.get(SADTALKER_DIR_ENV, "").strip()
    return Path(value).expanduser().resolve() if value else None


def sadtalker_python(checkout: Path | None = None) -> Path:
    """Interpreter for SadTalker's own environment: $PERSONA_VIDEO_SADTALKER_PYTHON, else a
    ``venv``/``.venv`` inside the checkout, else this interpreter."""
    value = os.environ.get(SADTALKER_PYTHON_ENV, "").strip()
    if value:
        return Path(value).expanduser()
    if checkout is not None:
        for venv in ("venv", ".venv"):
            candidate = checkout / venv / "bin" / "python"
            if candidate.is_file():
                return candidate
    return Path(sys.executable)


@dataclass(frozen=True)
class BackendStatus:
    """Whether one heavy backend can run here.

    backend: "xtts" | "sadtalker" | "gfpgan".
    stage: the pipeline stage it serves.
    available: True when ``auto`` may pick it.
    reason: one sentence: what is missing and how to fix it, or where it runs.
    device: "cuda" | "cpu" | "" (not known because something else is missing).
    """

    backend: str
    stage: str
    available: bool
    reason: str
    device: str = ""

    def to_dict(self) -> dict:
        return {
            "backend": self.backend,
            "stage": self.stage,
            "available": self.available,
            "reason": self.reason,
            "device": self.device,
        }


def _sadtalker_problems() -> list[str]:
    checkout = sadtalker_checkout()
    if checkout is None:
        return [f"no SadTalker checkout: clone OpenTalker/SadTalker and set {SADTALKER_DIR_ENV} to its folder"]
    if not checkout.is_dir():
        return [f"{SADTALKER_DIR_ENV}={checkout} is not a folder: point it at a SadTalker clone"]
    problems = []
    missing = [str(checkout / f) for f in SADTALKER_CHECKOUT_FILES if not (checkout / f).is_file()]
    if missing:
        problems.append(
            f"SadTalker checkout incomplete, missing {', '.join(missing)} "
            "(its scripts/download_models.sh puts the gfpgan/weights files there)"
        )
    python = sadtalker_python(checkout)
    if not python.is_file():
        problems.append(f"SadTalker's Python {python} does not exist: set {SADTALKER_PYTHON_ENV} to its interpreter")
    return problems


def heavy_backend_status(backend: str, root: Path | None = None) -> BackendStatus:
    """State of one heavy backend ("xtts", "sadtalker", "gfpgan") with the reason."""
    stage, modules, cpu_ok = HEAVY_BACKENDS[backend]
    problems: list[str] = []
    if backend == "sadtalker":
        problems += _sadtalker_problems()
    packages = missing_packages(modules)
    if packages:
        problems.append(f"missing Python package(s) {', '.join(packages)}: pip install -r requirements-gpu.txt")
    missing = missing_weights(backend, root)
    if missing:
        problems.append(f"missing file(s) {', '.join(str(p) for p in missing)} (see checkpoints/README.md)")
    if problems:
        if "torch" not in packages and importlib.util.find_spec("torch") is not None and cuda_device_name() is None:
            problems.append(
                "and no CUDA GPU: it would run on CPU, slowly" if cpu_ok else "and no CUDA GPU, which it needs"
            )
        return BackendStatus(backend, stage, False, "; ".join(problems))
    gpu = cuda_device_name()
    if gpu:
        return BackendStatus(backend, stage, True, f"ready on CUDA ({gpu})", "cuda")
    if cpu_ok:
        return BackendStatus(backend, stage, True, "ready, but no CUDA GPU: runs on CPU and will be slow", "cpu")
    return BackendStatus(backend, stage, False, f"no CUDA GPU: {backend} is too slow on CPU to be picked", "cpu")


def backend_status(root: Path | None = None) -> dict[str, BackendStatus]:
    """State of every heavy backend, keyed by backend name."""
    return {name: heavy_backend_status(name, root) for name in HEAVY_BACKENDS}
