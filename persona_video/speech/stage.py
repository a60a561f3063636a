"""The speech stage as the pipeline calls it: the voice chosen once (and why) before any work, the
script spoken (XTTS with a GPU lease on ZeroGPU), and audio.wav, timing.json and speech.json saved
in the job folder."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..personas import Persona
from ..types import BackendChoice, Request, Script, Speech
from ..wav import write_wav
from .choice import resolve_voice

if TYPE_CHECKING:
    from ..jobs.folder import Job


def choose_voice(request: Request, persona: Persona, *, heavy_here: bool = True) -> BackendChoice:
    """The speech backend and why, with (voice, notice) as the target; InputError for an unknown
    backend or voice, BackendUnavailable for XTTS asked for by name where it cannot run.

    heavy_here: False where heavy backends run on other machines: XTTS asked for by name is then
        not checked against this machine (the choice is auto's)."""
    from ..weights.runtime import heavy_backend_status

    asked = "auto" if request.speech_backend == "xtts" and not heavy_here else request.speech_backend
    backend, voice, notice = resolve_voice(persona, request.voice, asked, request.reference_wav)
    xtts = heavy_backend_status("xtts")
    if backend == "xtts":
        why = f"voice cloning from {Path(voice).name}: {xtts.reason}"
    elif asked == "auto":
        why = f"voice {voice}" + (f"; xtts not used: {xtts.reason}" if not xtts.available else "; no reference voice")
    else:
        why = "chosen"
    return BackendChoice(backend, why + (f" ({notice})" if notice else ""), (voice, notice))


def speak(script: Script, persona: Persona, request: Request, choice: BackendChoice) -> Speech:
    """The script spoken by the chosen backend; XTTS (a torch model in this process) runs with a
    GPU lease on ZeroGPU, asked for by the script's length."""
    from ..zerogpu import on_gpu, speech_gpu_s
    from . import synthesize_with_intent

    options = {
        "voice": request.voice,
        "backend": request.speech_backend,
        "speed": request.speed,
        "seed": request.seed,
        "reference_wav": request.reference_wav,
    }
    if choice.backend == "xtts":
        words = len(script.intent.spoken_text.split())
        return on_gpu(speech_gpu_s(words), synthesize_with_intent, script.intent, persona, **options)
    return synthesize_with_intent(script.intent, persona, **options)


def speech_record(speech: Speech) -> dict[str, Any]:
    """What speech.json keeps beside audio.wav and timing.json: backend, voice, notice and the
    phoneme timings [[symbol, start_s, end_s], ...]."""
    return {
        "backend": speech.backend,
        "voice": speech.voice,
        "notice": speech.notice,
        "phonemes": [[p.phoneme, p.start_s, p.end_s] for p in speech.phonemes],
    }


def save_speech(job: Job, speech: Speech) -> None:
    """audio.wav, timing.json and speech.json (the phonemes: what motion needs to resume from here)."""
    write_wav(job.tmp_path("audio.wav"), speech.audio, speech.sample_rate)
    job.commit("audio.wav")
    job.write_json("timing.json", speech.timing.to_dict())
    job.write_json("speech.json", speech_record(speech))
