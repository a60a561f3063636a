"""Stage 1: script with intent markers.

``write_script`` picks the writer (Gemini when GEMINI_API_KEY is set, a local
OpenAI-compatible server when PERSONA_VIDEO_LLM_BASE_URL and _MODEL are set,
otherwise the offline writer) and falls back to the offline writer, with the
reason, when a service fails. ``script_from_text`` takes a user's script:
markup is honoured, plain text is annotated by the persona's rules.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from ..errors import BackendUnavailable, InputError, ServiceError
from ..personas import Persona
from ..types import Script, ScriptIntent
from .annotate import annotate, has_markup
from .markup import MarkupError, normalize, parse_markup, to_markup
from .offline import write_offline

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
MAX_SCRIPT_CHARS = 6000
SCRIPT_BACKENDS = ("auto", "offline", "gemini", "openai")

__all__ = [
    "MarkupError",
    "SCRIPT_BACKENDS",
    "annotate",
    "parse_markup",
    "resolve_script_backend",
    "script_from_text",
    "to_markup",
    "validate_prompt",
    "write_script",
]


def validate_prompt(prompt: object) -> str:
    """The prompt, stripped; InputError when empty or too long."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: type what the video should explain, e.g. 'Explain the M4 Mac Mini'")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(
            f"the prompt is {len(prompt)} characters long: keep it under {MAX_PROMPT_CHARS} "
            "(describe the topic; the script is written from it)"
        )
    return prompt


def resolve_script_backend(backend: str = "auto", env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(backend that will run, why) for a requested backend name."""
    from .gemini import GeminiSettings
    from .openai_compat import OpenAISettings

    env = os.environ if env is None else env
    if backend not in SCRIPT_BACKENDS:
        raise InputError(f"unknown script backend {backend!r}: choose one of {', '.join(SCRIPT_BACKENDS)}")
    gemini = GeminiSettings.from_env(env)
    local = OpenAISettings.from_env(env)
    if backend == "gemini" and gemini is None:
        raise BackendUnavailable("the gemini script backend needs GEMINI_API_KEY: set it, or choose 'offline'")
    if backend == "openai" and local is None:
        raise BackendUnavailable(
            "the openai script backend needs PERSONA_VIDEO_LLM_BASE_URL and PERSONA_VIDEO_LLM_MODEL "
            "(e.g. http://127.0.0.1:11434/v1 and llama3.2): set both, or choose 'offline'"
        )
    if backend == "auto":
        if gemini is not None:
            return "gemini", "GEMINI_API_KEY is set"
        if local is not None:
            return "openai", f"a local OpenAI-compatible server is configured ({local.base_url})"
        return "offline", "no GEMINI_API_KEY and no local LLM server configured"
    return backend, "chosen"


def write_script(
    prompt: str,
    persona: Persona,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    env: Mapping[str, str] | None = None,
) -> Script:
    """Prompt -> Script. None for temperature / max_tokens means the persona's value."""
    from .gemini import GeminiSettings, write_with_gemini
    from .openai_compat import OpenAISettings, write_with_openai_compatible

    prompt = validate_prompt(prompt)
    env = os.environ if env is None else env
    temperature = persona.script.temperature if temperature is None else float(temperature)
    max_tokens = persona.script.max_tokens if max_tokens is None else int(max_tokens)
    if not 0.0 <= temperature <= 2.0:
        raise InputError(f"temperature {temperature} is out of range: use 0 to 2")
    if not 16 <= max_tokens <= 2048:
        raise InputError(f"max_tokens {max_tokens} is out of range: use 16 to 2048")
    chosen, why = resolve_script_backend(backend, env)
    notice = ""
    if chosen != "offline":
        try:
            if chosen == "gemini":
                settings = GeminiSettings.from_env(env)
                intent = write_with_gemini(
                    prompt, persona, temperature=temperature, max_tokens=max_tokens, settings=settings
                )
            else:
                settings = OpenAISettings.from_env(env)
                intent = write_with_openai_compatible(
                    prompt, persona, temperature=temperature, max_tokens=max_tokens, settings=settings
                )
            intent = _ensure_intent(normalize(intent), persona)
            return Script(to_markup(intent), intent, chosen, "")
        except ServiceError as e:
            logger.warning("script service failed, using the offline writer: %s", e)
            notice = f"{e} — used the offline writer instead."
    else:
        logger.info("script backend: offline (%s)", why)
    intent = write_offline(prompt, persona, max_tokens=max_tokens, seed=seed)
    return Script(to_markup(intent), intent, "offline", notice)


def _ensure_intent(intent: ScriptIntent, persona: Persona) -> ScriptIntent:
    """An LLM answer with no pauses or emphasis at all is re-annotated by rules."""
    if any(s.intent_type != "neutral" for s in intent.segments):
        return intent
    return annotate(intent.spoken_text, persona.script)


def script_from_text(text: str, persona: Persona) -> Script:
    """A user's script: markup honoured; plain text annotated by the persona's rules."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("the script is empty: write at least one sentence")
    if len(text) > MAX_SCRIPT_CHARS:
        raise InputError(f"the script is {len(text)} characters long: keep it under {MAX_SCRIPT_CHARS}")
    intent = parse_markup(text) if has_markup(text) else annotate(text, persona.script)
    intent = normalize(intent)
    return Script(to_markup(intent), intent, "given", "")
