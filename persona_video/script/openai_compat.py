"""Script writer backed by any OpenAI-compatible chat completions server:
Ollama, llama.cpp server, vLLM, LM Studio — the way people run local models.

Used when PERSONA_VIDEO_LLM_BASE_URL and PERSONA_VIDEO_LLM_MODEL are set.
The request is ``POST {base_url}/chat/completions`` with the persona's system
instruction, the persona's temperature, max_tokens and
``response_format: {"type": "json_object"}``; a server that rejects
response_format with HTTP 400 is asked once more without it. Every failure
raises :class:`ServiceError`; the script stage falls back to the offline
writer and shows the reason.

Environment:
    PERSONA_VIDEO_LLM_BASE_URL    e.g. http://127.0.0.1:11434/v1 (Ollama), http://127.0.0.1:8080/v1 (llama.cpp)
    PERSONA_VIDEO_LLM_MODEL       e.g. llama3.2
    PERSONA_VIDEO_LLM_API_KEY     sent as "Authorization: Bearer ..." when set
    PERSONA_VIDEO_LLM_TIMEOUT_S   seconds to wait for the answer, default 60
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import InputError, ServiceError
from ..personas import Persona
from ..settings import env_number
from ..types import ScriptIntent
from .llm_common import segments_from_json, system_instruction, user_message

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
_HTTP_FIXES = {
    401: "set PERSONA_VIDEO_LLM_API_KEY to a key the server accepts",
    403: "set PERSONA_VIDEO_LLM_API_KEY to a key the server accepts",
    404: "check PERSONA_VIDEO_LLM_BASE_URL (it usually ends in /v1) and that the model is pulled/loaded",
    429: "the server is busy or over quota: wait and try again",
}
_ERROR_CHARS = 200


@dataclass(frozen=True)
class OpenAISettings:
    """How to reach an OpenAI-compatible server.

    base_url: root of the API, up to and including the version, e.g. http://127.0.0.1:11434/v1.
    model: model name the server knows, e.g. "llama3.2".
    api_key: bearer token, or None for servers without auth (most local ones).
    timeout_s: seconds to wait for one answer (> 0).
    """

    base_url: str
    model: str
    api_key: str | None = None
    timeout_s: float = DEFAULT_TIMEOUT_S

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> OpenAISettings | None:
        """Settings from the environment; None unless both base URL and model are set."""
        base_url = env.get("PERSONA_VIDEO_LLM_BASE_URL", "").strip()
        model = env.get("PERSONA_VIDEO_LLM_MODEL", "").strip()
        if not base_url or not model:
            return None
        if not base_url.startswith(("http://", "https://")):
            raise InputError(
                f"PERSONA_VIDEO_LLM_BASE_URL = {base_url!r} must start with http:// or https://, "
                "e.g. http://127.0.0.1:11434/v1"
            )
        timeout_s = env_number(
            "PERSONA_VIDEO_LLM_TIMEOUT_S",
            DEFAULT_TIMEOUT_S,
            example="60 (seconds)",
            positive=True,
            env=env,
            error=InputError,
        )
        return cls(
            base_url=base_url.rstrip("/"),
            model=model,
            api_key=env.get("PERSONA_VIDEO_LLM_API_KEY", "").strip() or None,
            timeout_s=timeout_s,
        )

    @property
    def label(self) -> str:
        """How messages name the service: "llama3.2 at http://127.0.0.1:11434/v1"."""
        return f"{self.model} at {self.base_url}"


def _error_detail(response: httpx.Response) -> str:
    """The server's own error message, short: OpenAI's {"error": {"message"}} or the raw body."""
    try:
        data = response.json()
    except ValueError:
        data = None
    message: Any = None
    if isinstance(data, dict):
        error = data.get("error")
        message = error.get("message") if isinstance(error, dict) else error
        message = message or data.get("message") or data.get("detail")
    text = str(message) if message else response.text
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."


def _post(client: httpx.Client, url: str, body: dict[str, Any], settings: OpenAISettings) -> httpx.Response:
    try:
        return client.post(url, json=body)
    except httpx.TimeoutException as e:
        raise ServiceError(
            f"{settings.label} timed out after {settings.timeout_s:g} s: try again, "
            "use a smaller model, or raise PERSONA_VIDEO_LLM_TIMEOUT_S"
        ) from e
    except httpx.TransportError as e:
        raise ServiceError(
            f"could not reach the LLM server at {settings.base_url} ({e.__class__.__name__}: {e}): "
            "is the server running? Check PERSONA_VIDEO_LLM_BASE_URL"
        ) from e


def write_with_openai_compatible(
    prompt: str, persona: Persona, *, temperature: float, max_tokens: int, settings: OpenAISettings
) -> ScriptIntent:
    """Ask an OpenAI-compatible server for the persona's script of the prompt.

    prompt: what the video explains (already validated).
    temperature: sampling temperature, 0..2.
    max_tokens: the answer's output-token limit (16..2048); the word target is derived from it.
    Returns the segments, pauses clamped into the persona's range.
    Raises ServiceError on a timeout, an unreachable server, an HTTP error, a
    cut-off answer, or an answer that is not the JSON asked for.
    """
    url = f"{settings.base_url}/chat/completions"
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": [
            {"role": "system", "content": system_instruction(persona, max_tokens=max_tokens)},
            {"role": "user", "content": user_message(prompt)},
        ],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "response_format": {"type": "json_object"},
        "stream": False,
    }
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    started_s = time.perf_counter()
    with httpx.Client(timeout=settings.timeout_s, headers=headers) as client:
        response = _post(client, url, body, settings)
        if response.status_code == 400:
            # Some servers (older llama.cpp, some proxies) reject response_format; the prompt asks for JSON anyway.
            logger.info(
                "%s rejected the request (%s); retrying without response_format",
                settings.label,
                _error_detail(response),
            )
            body.pop("response_format")
            response = _post(client, url, body, settings)
    if response.status_code != 200:
        fix = _HTTP_FIXES.get(response.status_code, "check the server's log")
        raise ServiceError(f"{settings.label} answered HTTP {response.status_code}: {_error_detail(response)}; {fix}")
    logger.info("%s answered in %.2f s", settings.label, time.perf_counter() - started_s)
    return _intent_from_completion(response, persona, settings=settings, max_tokens=max_tokens)


def _intent_from_completion(
    response: httpx.Response, persona: Persona, *, settings: OpenAISettings, max_tokens: int
) -> ScriptIntent:
    """The script in a chat completion body, or ServiceError naming what is missing."""
    try:
        data = response.json()
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ServiceError(
            f"{settings.label} did not answer with a chat completion (no choices[0].message.content): "
            f"{_error_detail(response)}"
        ) from e
    if not isinstance(content, str):
        raise ServiceError(f"{settings.label} answered with no text (message.content is {content!r})")
    try:
        return segments_from_json(content, service=settings.label, pause_range_s=persona.script.pause_range_s)
    except ServiceError as e:
        if choice.get("finish_reason") == "length":
            raise ServiceError(
                f"{settings.label} stopped at the max_tokens limit ({max_tokens}) before the script was "
                "complete: raise max_tokens"
            ) from e
        raise
