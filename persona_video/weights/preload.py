"""Load the heavy in-process models at server start, as the embedded voices are, so the first
Generate does not pay for them. SadTalker is not among them: it loads in its own process per step."""

from __future__ import annotations

import logging
import time

from persona_video.errors import PersonaVideoError
from persona_video.weights.registry import backend_dir, weight_path
from persona_video.weights.runtime import heavy_backend_status

logger = logging.getLogger(__name__)

#: The heavy backends whose models live in this process, in the order they load.
IN_PROCESS = ("xtts", "gfpgan")


def _load(backend: str) -> None:
    if backend == "xtts":
        from ..speech.xtts import XTTSBackend

        _ = XTTSBackend(backend_dir("xtts"), device="auto").sample_rate  # the model loads on first use
    else:
        from ..enhance.gfpgan import GFPGANEnhancer

        GFPGANEnhancer(weight_path("gfpgan"), device="auto")


def preload_heavy_models() -> dict[str, float]:
    """Load XTTS v2 and GFPGAN once each (the same per-process caches a request uses), where
    they can run here. Returns {backend: seconds} for those loaded; one that is not available
    is left out, one that fails to load is logged and left for the request that needs it."""
    loaded: dict[str, float] = {}
    for backend in IN_PROCESS:
        status = heavy_backend_status(backend)
        if not status.available:
            logger.info("warm-up: %s not loaded: %s", backend, status.reason)
            continue
        started = time.perf_counter()
        try:
            _load(backend)
        except (PersonaVideoError, OSError, RuntimeError) as e:
            logger.warning("warm-up: %s did not load: %s", backend, e)
            continue
        loaded[backend] = time.perf_counter() - started
        logger.info("warm-up: %s loaded in %.1f s (%s)", backend, loaded[backend], status.reason)
    return loaded
