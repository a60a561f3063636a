"""Which backend and voice speak a request: the request's choice, else the persona's."""

from __future__ import annotations

from pathlib import Path

from ..errors import BackendUnavailable, InputError
from ..personas import Persona
from .voices import EMBEDDED_VOICES

SPEECH_BACKENDS = ("auto", "hibari", "piper", "xtts")


def _xtts_status():
    from ..weights.runtime import heavy_backend_status

    return heavy_backend_status("xtts")


def resolve_voice(
    persona: Persona, voice: str | None = None, backend: str = "auto", reference_wav: str | Path | None = None
) -> tuple[str, str, str]:
    """(backend, voice, notice) that will speak, from the request and the persona.

    auto: XTTS voice cloning when its weights and runtime are here and there is
    a reference recording (the request's or the persona's); otherwise the
    embedded voice, with a notice when a reference was given but cannot be used.
    """
    if backend not in SPEECH_BACKENDS:
        raise InputError(f"unknown speech backend {backend!r}: choose one of {', '.join(SPEECH_BACKENDS)}")
    reference = reference_wav or (
        str(persona.resolve_path(persona.speech.reference_wav)) if persona.speech.reference_wav else None
    )
    if backend == "xtts":
        status = _xtts_status()
        if not status.available:
            raise BackendUnavailable(f"the xtts speech backend cannot run here: {status.reason}")
        if reference is None:
            raise InputError("xtts clones a voice: upload a reference recording of 3-30 s of speech")
        return "xtts", str(reference), ""
    notice = ""
    if backend == "auto" and reference is not None:
        status = _xtts_status()
        if status.available:
            return "xtts", str(reference), ""
        if reference_wav is not None:
            notice = f"voice cloning (XTTS) is not available here, so the default voice was used: {status.reason}"
    voice = voice or persona.speech.voice
    if voice not in EMBEDDED_VOICES:
        raise InputError(f"unknown voice {voice!r}: choose one of {', '.join(EMBEDDED_VOICES)}")
    needed = EMBEDDED_VOICES[voice]
    if backend not in ("auto", needed):
        raise InputError(f"voice {voice!r} is a {needed} voice, not {backend}: choose backend {needed} or auto")
    return needed, voice, notice
