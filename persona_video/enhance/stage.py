"""The enhance stage's choice, made once before any work: GFPGAN restores the rendered frames when
asked for, or auto and its weights and runtime are here; otherwise none."""

from __future__ import annotations

from ..errors import BackendUnavailable, InputError
from ..types import BackendChoice, Request

ENHANCERS = ("auto", "none", "gfpgan")


def choose_enhancer(request: Request, *, heavy_here: bool = True) -> BackendChoice:
    """ "gfpgan" or "none", and why; InputError for an unknown name, BackendUnavailable for GFPGAN
    asked for by name where it cannot run.

    heavy_here: False where heavy backends run on other machines (not checked here then)."""
    from ..weights.runtime import heavy_backend_status

    if request.enhancer not in ENHANCERS:
        raise InputError(f"unknown enhancer {request.enhancer!r}: choose one of {', '.join(ENHANCERS)}")
    if request.enhancer == "none":
        return BackendChoice("none", "chosen")
    gfpgan = heavy_backend_status("gfpgan")
    if request.enhancer == "gfpgan" and not gfpgan.available and heavy_here:
        raise BackendUnavailable(f"the gfpgan enhancer cannot run here: {gfpgan.reason}")
    if request.enhancer == "gfpgan" or gfpgan.available:
        return BackendChoice("gfpgan", gfpgan.reason)
    return BackendChoice("none", f"gfpgan not used: {gfpgan.reason}")
