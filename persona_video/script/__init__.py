"""Stage 1: script with intent markers. Backends: ``gemini``, ``openai_compat``, ``ollama``,
``local`` (llama.cpp on a GGUF), ``offline`` (the template); ``stage`` chooses once per request
and saves the script in the job folder.

Takes a prompt (or the user's own script) and a persona; gives a Script:
canonical markup plus its segments, written sentence by sentence.

``stream_script`` picks the writer and yields ScriptDrafts as the script is
written: each carries the text so far and the sentences that are final.
``auto`` takes the first writer that can serve: Gemini (GEMINI_API_KEY), a
configured OpenAI-compatible server (PERSONA_VIDEO_LLM_BASE_URL/_MODEL), a
running Ollama on the loopback address, the local model (a GGUF file run by
llama.cpp in-process), else the offline template. What a model writes is
checked (no preamble, on topic, speakable) and retried once with another seed;
a writer that fails or writes something unusable falls back to the template,
with the reason. ``script_from_text`` takes a user's script: markup is
honoured, plain text is annotated by the persona's rules.

Writers: offline (template), local (llama.cpp), ollama, openai, gemini.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import BackendUnavailable, InputError, ServiceError
from ..personas import Persona
from ..types import Script, ScriptDraft, ScriptIntent, split_sentences
from .annotate import annotate, has_markup
from .markup import MarkupError, normalize, parse_markup, to_markup
from .offline import write_offline
from .sentences import SentenceStream, key_words, on_topic, preamble, speakable

logger = logging.getLogger(__name__)

MAX_PROMPT_CHARS = 2000
MAX_SCRIPT_CHARS = 6000
SCRIPT_BACKENDS = ("auto", "local", "ollama", "openai", "gemini", "offline")
#: Seconds between drafts while text grows (a finished sentence is sent at once).
DRAFT_INTERVAL_S = 0.08
#: How to get a model, for the notice under a template script.
GET_A_MODEL = (
    "For a script about the topic: run 'python -m persona_video fetch llm' (the local model), "
    "start Ollama with a chat model, or set GEMINI_API_KEY."
)

__all__ = [
    "MarkupError",
    "SCRIPT_BACKENDS",
    "annotate",
    "parse_markup",
    "resolve_script_backend",
    "script_from_text",
    "stream_script",
    "to_markup",
    "validate_prompt",
    "write_script",
]


def validate_prompt(prompt: object) -> str:
    """The prompt, stripped; InputError when empty, too long, or not in English."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty: type what the video should explain, e.g. 'Explain the M4 Mac Mini'")
    prompt = prompt.strip()
    if len(prompt) > MAX_PROMPT_CHARS:
        raise InputError(
            f"the prompt is {len(prompt)} characters long: keep it under {MAX_PROMPT_CHARS} "
            "(describe the topic; the script is written from it)"
        )
    speakable(prompt, "prompt")
    return prompt


@dataclass(frozen=True)
class WriterPlan:
    """Which writer runs and why: name (a SCRIPT_BACKENDS entry other than auto), why
    (one sentence), model (what writes: a file or model name, "" for the template), and
    target: the settings the writer needs (GeminiSettings, OpenAISettings, a GGUF Path)."""

    name: str
    why: str
    model: str = ""
    target: Any = None


def plan_writer(backend: str = "auto", env: Mapping[str, str] | None = None) -> WriterPlan:
    """The writer a request's script backend resolves to; InputError for an unknown name,
    BackendUnavailable (with the fix) for a writer asked for by name that cannot run."""
    from .gemini import GeminiSettings
    from .local import find_local_model
    from .ollama import probe_ollama
    from .openai_compat import OpenAISettings

    env = os.environ if env is None else env
    if backend not in SCRIPT_BACKENDS:
        raise InputError(f"unknown script backend {backend!r}: choose one of {', '.join(SCRIPT_BACKENDS)}")
    if backend == "offline":
        return WriterPlan("offline", "chosen")
    if backend in ("auto", "gemini"):
        gemini = GeminiSettings.from_env(env)
        if gemini is not None:
            return WriterPlan("gemini", "GEMINI_API_KEY is set", gemini.model, gemini)
        if backend == "gemini":
            raise BackendUnavailable("the gemini script backend needs GEMINI_API_KEY: set it, or choose 'offline'")
    if backend in ("auto", "openai"):
        server = OpenAISettings.from_env(env)
        if server is not None:
            why = f"an OpenAI-compatible server is configured ({server.base_url})"
            return WriterPlan("openai", why, server.model, server)
        if backend == "openai":
            raise BackendUnavailable(
                "the openai script backend needs PERSONA_VIDEO_LLM_BASE_URL and PERSONA_VIDEO_LLM_MODEL "
                "(e.g. http://127.0.0.1:8080/v1 and qwen2.5): set both, or choose 'offline'"
            )
    if backend in ("auto", "ollama"):
        ollama = probe_ollama(env)
        if ollama is not None:
            return WriterPlan("ollama", f"Ollama is running at {ollama.base_url[:-3]}", ollama.model, ollama)
        if backend == "ollama":
            raise BackendUnavailable(
                "the ollama script backend needs a running Ollama with a chat model on this machine: start it "
                "(ollama serve; ollama pull qwen2.5:1.5b), set OLLAMA_HOST, or choose 'offline'"
            )
    path = find_local_model(env)
    if path is not None:
        return WriterPlan("local", f"the local model {path.name} is present", path.name, path)
    if backend == "local":
        raise BackendUnavailable(
            "the local script backend needs a model: run 'python -m persona_video fetch llm' "
            "(1.1 GB, once) or set PERSONA_VIDEO_LLM_GGUF to a GGUF file, or choose 'offline'"
        )
    return WriterPlan("offline", "no language model here (no key, no server, no Ollama, no local model)")


def resolve_script_backend(backend: str = "auto", env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(backend that will run, why) for a requested backend name."""
    plan = plan_writer(backend, env)
    return plan.name, plan.why


def _check_limits(persona: Persona, temperature: float | None, max_tokens: int | None) -> tuple[float, int]:
    temperature = persona.script.temperature if temperature is None else float(temperature)
    max_tokens = persona.script.max_tokens if max_tokens is None else int(max_tokens)
    if not 0.0 <= temperature <= 2.0:
        raise InputError(f"temperature {temperature} is out of range: use 0 to 2")
    if not 16 <= max_tokens <= 2048:
        raise InputError(f"max_tokens {max_tokens} is out of range: use 16 to 2048")
    return temperature, max_tokens


def _model_pieces(
    plan: WriterPlan,
    prompt: str,
    persona: Persona,
    *,
    temperature: float,
    max_tokens: int,
    seed: int,
    cancel: threading.Event | None,
) -> Iterator[str]:
    """The markup a model writer writes, in the pieces it streams in."""
    options: dict[str, Any] = {"temperature": temperature, "max_tokens": max_tokens, "seed": seed, "cancel": cancel}
    if plan.name == "local":
        from .local_writer import write_with_local

        yield from write_with_local(prompt, persona, model_path=Path(plan.target), **options)
    elif plan.name == "gemini":
        from .gemini import write_with_gemini

        yield from write_with_gemini(prompt, persona, settings=plan.target, **options)
    else:
        from .openai_compat import write_with_openai_compatible

        yield from write_with_openai_compatible(prompt, persona, settings=plan.target, **options)


class _Unusable(Exception):
    """What a model wrote cannot be used (off topic, nothing complete); try again or fall back."""


def _attempt(
    plan: WriterPlan, prompt: str, persona: Persona, *, seed: int, **kwargs: Any
) -> Iterator[str | ScriptIntent]:
    """One attempt of a model writer: the text pieces it writes (str) and, between
    them, its checked sentences (ScriptIntent) as they become final. Sentences are held
    back until the script has named the topic, so nothing off topic is released; a
    preamble ("Sure, here is ...") is dropped. _Unusable when nothing can be used."""
    stream = SentenceStream(persona.script)
    held: list[ScriptIntent] = []
    released = False
    first = True

    def take(sentences: list[ScriptIntent]) -> Iterator[ScriptIntent]:
        nonlocal released, first
        for sentence in sentences:
            if first and preamble(sentence):
                logger.info("dropped the model's preamble %r", sentence.spoken_text)
            else:
                held.append(sentence)
            first = False
        if not released and held and on_topic(" ".join(h.spoken_text for h in held), prompt):
            released = True
        if released:
            yield from held
            held.clear()

    for piece in _model_pieces(plan, prompt, persona, seed=seed, **kwargs):
        yield piece
        yield from take(stream.feed(piece))
    yield from take(stream.close())
    if not released:
        if held:
            raise _Unusable(f"it did not mention the topic ({', '.join(sorted(key_words(prompt)))})")
        raise _Unusable("it stopped before its first sentence was complete (raise max tokens)")


def _from_model(
    plan: WriterPlan, prompt: str, persona: Persona, *, seed: int, cancel: threading.Event | None, **kwargs: Any
) -> Iterator[ScriptDraft | str]:
    """Drafts from a model writer, then its notice ("" when all went well) as the last
    item; no drafts at all when it gave nothing usable (the notice says why)."""
    sentences: list[ScriptIntent] = []
    notice = ""
    for attempt_seed in (seed, seed + 1):
        text = ""
        last_draft_s = time.perf_counter()
        try:
            for item in _attempt(plan, prompt, persona, seed=attempt_seed, cancel=cancel, **kwargs):
                if isinstance(item, str):
                    text += item
                    if time.perf_counter() - last_draft_s < DRAFT_INTERVAL_S:
                        continue
                else:
                    sentences.append(item)
                last_draft_s = time.perf_counter()
                yield ScriptDraft(text, tuple(sentences), plan.name)
            yield ScriptDraft(text, tuple(sentences), plan.name)  # all of the text, whatever the throttle held
            notice = ""  # a retry that worked needs no notice
            break
        except _Unusable as e:
            if sentences:  # what was released stays; the script ends there
                notice = f"The {plan.name} model stopped early: {e}."
                break
            notice = f"The {plan.name} model's script could not be used: {e}"
            logger.warning("%s (seed %d)", notice, attempt_seed)
        except (ServiceError, BackendUnavailable) as e:
            notice = f"{e} — the script ends after what was written." if sentences else str(e)
            logger.warning("script writer %s failed: %s", plan.name, e)
            break
    yield notice


def stream_script(
    prompt: str,
    persona: Persona,
    *,
    temperature: float | None = None,
    max_tokens: int | None = None,
    seed: int = 0,
    backend: str = "auto",
    env: Mapping[str, str] | None = None,
    cancel: threading.Event | None = None,
    plan: WriterPlan | None = None,
) -> Iterator[ScriptDraft]:
    """Prompt -> ScriptDrafts, the last one carrying the finished Script.

    None for temperature / max_tokens means the persona's value. A model writer's
    sentences come out as each is final (checked: on topic, no preamble); what a
    model wrote that cannot be used is tried once more with seed + 1, then the
    template writes, with a notice saying why. Cancelled when ``cancel`` is set.
    plan: the writer already chosen for this request (``plan_writer``); None chooses from ``backend``.
    """
    prompt = validate_prompt(prompt)
    temperature, max_tokens = _check_limits(persona, temperature, max_tokens)
    plan = plan or plan_writer(backend, env)
    notice = ""
    if plan.name != "offline":
        last: ScriptDraft | None = None
        for item in _from_model(
            plan, prompt, persona, seed=seed, cancel=cancel, temperature=temperature, max_tokens=max_tokens
        ):
            if isinstance(item, str):
                notice = item
            else:
                last = item
                yield item
        if last is not None and last.sentences:
            intent = normalize(ScriptIntent(tuple(seg for s in last.sentences for seg in s.segments)))
            script = Script(to_markup(intent), intent, plan.name, notice, plan.model)
            # the canonical script merges text across sentence joins; cut again, it gives back the
            # sentences already handed out
            yield ScriptDraft(script.markup, tuple(split_sentences(intent)), plan.name, script)
            return
        notice += " — used the offline writer instead."
    else:
        logger.info("script backend: offline (%s)", plan.why)
        if plan.why != "chosen":
            notice = f"This script is a template: it knows nothing about the topic. {GET_A_MODEL}"
    intent = write_offline(prompt, persona, max_tokens=max_tokens, seed=seed)
    script = Script(to_markup(intent), intent, "offline", notice)
    yield ScriptDraft(script.markup, tuple(split_sentences(intent)), "offline", script)


def write_script(prompt: str, persona: Persona, **kwargs: Any) -> Script:
    """Prompt -> Script, the whole of it (``stream_script``'s last draft); same arguments."""
    drafts = list(stream_script(prompt, persona, **kwargs))
    return drafts[-1].script


def script_from_text(text: str, persona: Persona) -> Script:
    """A user's script: markup honoured; plain text annotated by the persona's rules."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("the script is empty: write at least one sentence")
    if len(text) > MAX_SCRIPT_CHARS:
        raise InputError(f"the script is {len(text)} characters long: keep it under {MAX_SCRIPT_CHARS}")
    speakable(text, "script")
    intent = parse_markup(text) if has_markup(text) else annotate(text, persona.script)
    intent = normalize(intent)
    return Script(to_markup(intent), intent, "given", "")


def given_script_drafts(script: Script) -> Iterator[ScriptDraft]:
    """A given script as drafts (one, with every sentence final), like a writer's."""
    yield ScriptDraft(script.markup, tuple(split_sentences(script.intent)), script.backend, script)
