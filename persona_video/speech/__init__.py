"""Stage 2: speech with a per-frame intent timing map. Takes the Script's intent and the persona;
gives Speech: audio, the IntentTimingMap and phoneme timings.

Backends: hibari (bundled voice "heart"), Piper (voice "joe", ``piper_graph``) and XTTS v2 voice
cloning (``xtts``, the GPU extra); ``stage`` chooses once per request (``choice``) and saves the
speech in the job folder.

``SpeechStream`` speaks a script sentence by sentence (see ``stream`` for how
pauses, emphasis, level and joins are made); ``synthesize_with_intent`` speaks
a whole ScriptIntent through one, so a script spoken all at once and the same
script streamed sentence by sentence give the same audio, spans and phonemes.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..personas import Persona
from ..types import FPS, ScriptIntent, Speech, split_sentences
from ..wav import read_wav, write_wav
from .choice import SPEECH_BACKENDS, resolve_voice
from .stream import EMPHASIS_GAIN_DB, EMPHASIS_SLOWDOWN, JOIN_S, LEAD_IN_S, PEAK, TAIL_S, SpeechStream

__all__ = [
    "EMPHASIS_GAIN_DB",
    "EMPHASIS_SLOWDOWN",
    "JOIN_S",
    "LEAD_IN_S",
    "PEAK",
    "SPEECH_BACKENDS",
    "SpeechStream",
    "TAIL_S",
    "read_wav",
    "resolve_voice",
    "synthesize_with_intent",
    "validate_reference_upload",
    "write_wav",
]


def synthesize_with_intent(
    intent: ScriptIntent,
    persona: Persona,
    *,
    voice: str | None = None,
    backend: str = "auto",
    speed: float | None = None,
    seed: int = 0,
    fps: int = FPS,
    reference_wav: str | Path | None = None,
) -> Speech:
    """Speak the script; returns audio, the intent timing map and phoneme timings.

    The script is cut into sentences (``split_sentences``) and spoken through a
    SpeechStream, exactly as the streaming pipeline does, so the spans are those
    of the cut segments. speed None means the persona's speed (0.5..2).
    reference_wav: a voice to clone (3-30 s) when XTTS can run; otherwise the
    embedded voice is used and the result's notice says so.
    """
    stream = SpeechStream(
        persona, voice=voice, backend=backend, speed=speed, seed=seed, fps=fps, reference_wav=reference_wav
    )
    if not any(s.intent_type != "pause" and s.text.strip() for s in intent.segments):
        raise InputError("the script has no words to speak: write at least one sentence")
    for sentence in split_sentences(intent):
        stream.add(sentence)
    stream.finish()
    return stream.speech()


def validate_reference_upload(path: str | Path) -> None:
    """Check an uploaded reference voice (readable, 3-30 s, not silent); InputError with the fix."""
    from .xtts import validate_reference_wav

    validate_reference_wav(Path(path))
