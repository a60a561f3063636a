"""ZeroGPU Spaces: the heavy in-process stage calls run inside ``spaces.GPU``, here and only here.

A ZeroGPU Space (the platform sets ``SPACES_ZERO_GPU=true``) lends the process a GPU only
while a function wrapped by ``spaces.GPU`` runs, for at most the seconds that call asks
for; a shorter request waits less in the platform's queue. The stage calls that run torch
models in this process go through :func:`on_gpu` with the seconds they need, computed from
what they will do: XTTS speech from the script's words (:func:`speech_gpu_s`), the
GFPGAN-restored video from its frames (:func:`video_gpu_s`).

Everywhere else this is a plain call: without ``SPACES_ZERO_GPU`` the ``spaces`` package is
not even imported, and where it is installed its ``GPU`` decorator hands the function back
unchanged anyway.

ZeroGPU runs the wrapped call in a forked worker and pickles its arguments and its result,
so both must pickle (a :class:`~persona_video.jobs.Job` does not: it holds a lock). The
wrapper is made when this module is imported, because the platform checks at start-up that
the app has a ``spaces.GPU`` function, and ``spaces`` must be imported before torch.

SadTalker runs in its own Python process, which ZeroGPU cannot lend a GPU to: there, motion
and render are the embedded animator (:data:`SADTALKER_REASON`).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from .errors import BackendUnavailable

logger = logging.getLogger(__name__)

R = TypeVar("R")

#: Set to "true" by the platform on a ZeroGPU Space.
ZERO_GPU_ENV = "SPACES_ZERO_GPU"
#: Shortest and longest GPU lease asked for, seconds (ZeroGPU grants at most 300 s at once).
MIN_GPU_S = 10
MAX_GPU_S = 300
#: Fixed cost of a lease: the models move onto the GPU and CUDA warms up, seconds.
LEASE_SETUP_S = 8.0
#: Speaking rate used to turn a script's words into seconds of speech (150 words a minute).
WORDS_PER_SPEECH_S = 2.5
#: XTTS v2 seconds of GPU per second of speech: an estimate with headroom (no GPU was at hand to measure).
XTTS_GPU_S_PER_SPEECH_S = 0.5
#: GPU seconds per video frame with GFPGAN (restore, render, encode): an estimate with headroom, likewise.
GFPGAN_GPU_S_PER_FRAME = 0.05

SADTALKER_REASON = (
    "on a ZeroGPU Space the GPU is lent only to this app's own process, and SadTalker runs in its "
    "own Python environment: motion and render are the embedded animator (deploy the Docker image "
    "on a GPU machine for SadTalker)"
)


def on_zero_gpu(env: Mapping[str, str] | None = None) -> bool:
    """True on a ZeroGPU Space: ``SPACES_ZERO_GPU`` is 1, t or true (as ``spaces`` reads it)."""
    value = (os.environ if env is None else env).get(ZERO_GPU_ENV, "")
    return value.strip().lower() in ("1", "t", "true")


def clamp_gpu_s(seconds: float) -> int:
    """Whole seconds within MIN_GPU_S..MAX_GPU_S (what a lease may ask for)."""
    if not math.isfinite(seconds):
        return MAX_GPU_S
    return int(min(MAX_GPU_S, max(MIN_GPU_S, math.ceil(seconds))))


def speech_gpu_s(words: int) -> int:
    """GPU seconds to ask for to speak ``words`` words with XTTS v2."""
    speech_s = max(0, words) / WORDS_PER_SPEECH_S
    return clamp_gpu_s(LEASE_SETUP_S + XTTS_GPU_S_PER_SPEECH_S * speech_s)


def video_gpu_s(num_frames: int) -> int:
    """GPU seconds to ask for to render, restore with GFPGAN and encode ``num_frames`` frames."""
    return clamp_gpu_s(LEASE_SETUP_S + GFPGAN_GPU_S_PER_FRAME * max(0, num_frames))


def _call(gpu_s: int, fn: Callable[..., R], args: tuple, kwargs: dict[str, Any]) -> R:
    """What runs with the GPU: the stage call itself."""
    del gpu_s
    return fn(*args, **kwargs)


def _duration(gpu_s: int, fn: Callable[..., Any], args: tuple, kwargs: dict[str, Any]) -> int:
    """The lease ``spaces.GPU`` asks for, from the same arguments as the call."""
    del fn, args, kwargs
    return clamp_gpu_s(gpu_s)


def make_runner(env: Mapping[str, str] | None = None) -> Callable[..., Any]:
    """The function stage calls go through: ``spaces.GPU(duration=...)`` around the call on
    ZeroGPU, the call itself elsewhere. Raises BackendUnavailable on ZeroGPU without ``spaces``."""
    if not on_zero_gpu(env):
        return _call
    try:
        import spaces
    except ImportError as e:
        raise BackendUnavailable(
            f"{ZERO_GPU_ENV} is set but the spaces package is missing: pip install spaces (ZeroGPU Spaces come with it)"
        ) from e
    logger.info("ZeroGPU: heavy stage calls run inside spaces.GPU")
    return spaces.GPU(duration=_duration)(_call)


_RUNNER = make_runner()


def report_startup() -> None:
    """On ZeroGPU, tell the platform the app is up (what ``Blocks.launch`` would do through
    ``spaces``; this server starts uvicorn itself). The models already placed on the GPU are
    packed for the GPU worker then, so the heavy ones should be loaded first. Elsewhere nothing."""
    if not on_zero_gpu():
        return
    import spaces.zero

    spaces.zero.startup()


def on_gpu(gpu_s: int, fn: Callable[..., R], *args: Any, **kwargs: Any) -> R:
    """Run the stage call ``fn(*args, **kwargs)`` with a GPU lease of ``gpu_s`` seconds on
    ZeroGPU (clamped to MIN_GPU_S..MAX_GPU_S), in-process and as it is elsewhere."""
    return _RUNNER(clamp_gpu_s(gpu_s), fn, args, kwargs)
