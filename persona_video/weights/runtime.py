"""Whether each heavy backend can run here, and exactly why not: a missing file (with its full
path and the fetch command), a missing package, no CUDA, no SadTalker checkout. Nothing here
imports torch unless torch is installed, so the core install stays torch-free. Where the files
are is ``registry.py``."""

from __future__ import annotations

import functools
import importlib.util
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

from persona_video.errors import BackendUnavailable
from persona_video.weights.registry import (
    HEAVY_BACKENDS,
    SADTALKER_CHECKOUT_FILES,
    SADTALKER_DIR_ENV,
    SADTALKER_PYTHON_ENV,
    missing_weights,
)

logger = logging.getLogger(__name__)


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
            f"SadTalker checkout incomplete, missing {', '.join(missing)}: "
            "set PERSONA_VIDEO_SADTALKER_DIR to a full clone of OpenTalker/SadTalker"
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
        problems.append(
            f"missing file(s) {', '.join(str(p) for p in missing)}: python -m persona_video fetch {backend}"
        )
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
