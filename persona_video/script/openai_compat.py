"""Script writer backed by any OpenAI-compatible chat completions server:
Ollama, llama.cpp server, vLLM, LM Studio — the way people run local models.

Used when PERSONA_VIDEO_LLM_BASE_URL and PERSONA_VIDEO_LLM_MODEL are set.
The request is ``POST {base_url}/chat/completions`` with ``stream: true``, the
persona's system instruction in the script markup (the local model's, see
:mod:`.local_writer`), the persona's temperature, max_tokens and the seed. The
answer is server-sent events (``data: {...choices[0].delta.content...}`` up to
``data: [DONE]``); its markup goes on piece by piece, so each sentence is
final as soon as the model begins the next. A server that does not stream
answers whole, which is read too. Every failure (timeout, HTTP error, an
error or a malformed chunk in the stream, a stream that breaks off) raises
:class:`ServiceError`; the script stage keeps the sentences already final or
falls back to the offline writer, and shows the reason.

Environment:
    PERSONA_VIDEO_LLM_BASE_URL    e.g. http://127.0.0.1:11434/v1 (Ollama), http://127.0.0.1:8080/v1 (llama.cpp)
    PERSONA_VIDEO_LLM_MODEL       e.g. llama3.2
    PERSONA_VIDEO_LLM_API_KEY     sent as "Authorization: Bearer ..." when set
    PERSONA_VIDEO_LLM_TIMEOUT_S   seconds to wait for the answer to start or go on, default 60
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ..errors import Cancelled, InputError, ServiceError
from ..personas import Persona
from ..settings import env_number
from .llm_common import answer_pieces
from .local_writer import length_request, markup_instruction

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
    timeout_s: seconds to wait for the answer to start, and for each next chunk (> 0).
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
    return _short(str(message) if message else response.text)


def _http_status_error(response: httpx.Response, settings: OpenAISettings) -> ServiceError:
    response.read()
    fix = _HTTP_FIXES.get(response.status_code, "check the server's log")
    return ServiceError(f"{settings.label} answered HTTP {response.status_code}: {_error_detail(response)}; {fix}")


def write_with_openai_compatible(
    prompt: str,
    persona: Persona,
    *,
    temperature: float,
    max_tokens: int,
    settings: OpenAISettings,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """Stream the persona's script of the prompt from an OpenAI-compatible server, as markup pieces.

    prompt: what the video explains (already validated).
    temperature: sampling temperature, 0..2.
    max_tokens: the answer's output-token limit (16..2048); the word target is derived from it.
    seed: the sampling seed sent (a retry asks with another).
    Yields the markup as the server writes it (``stream: true``, server-sent events).
    Raises ServiceError on a timeout, an unreachable server, an HTTP error, an error
    or a malformed chunk in the stream, or a stream that breaks off before its end;
    Cancelled between chunks once ``cancel`` is set.
    """
    url = f"{settings.base_url}/chat/completions"
    body: dict[str, Any] = {
        "model": settings.model,
        "messages": [
            {"role": "system", "content": markup_instruction(persona)},
            {"role": "user", "content": length_request(prompt, max_tokens)},
        ],
        "temperature": temperature,
        "max_tokens": max_tokens,
        "seed": seed,
        "stream": True,
    }
    headers = {"Authorization": f"Bearer {settings.api_key}"} if settings.api_key else {}
    pieces = _stream_content(url, body, headers, settings, cancel)
    yield from answer_pieces(pieces, service=settings.label, pause_range_s=persona.script.pause_range_s)


def _stream_content(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    settings: OpenAISettings,
    cancel: threading.Event | None,
) -> Iterator[str]:
    """The content of each streamed delta; httpx's exceptions turned into ServiceError."""
    started_s = time.perf_counter()
    written = False  # whether any text came, for what a broken connection means
    try:
        with (
            httpx.Client(timeout=settings.timeout_s, headers=headers) as client,
            client.stream("POST", url, json=body) as response,
        ):
            if response.status_code != 200:
                raise _http_status_error(response, settings)
            if not response.headers.get("content-type", "").startswith("text/event-stream"):
                # a server that does not stream answers with the whole completion
                response.read()
                yield _whole_content(response, settings)
                return
            for piece in _sse_content(response.iter_lines(), settings, cancel):
                written = True
                yield piece
    except httpx.TimeoutException as e:
        raise ServiceError(
            f"{settings.label} timed out after {settings.timeout_s:g} s"
            f"{' in the middle of its answer' if written else ''}: try again, "
            "use a smaller model, or raise PERSONA_VIDEO_LLM_TIMEOUT_S"
        ) from e
    except httpx.TransportError as e:
        if written:
            raise ServiceError(
                f"the connection to {settings.label} broke in the middle of its answer "
                f"({e.__class__.__name__}: {e}): try again, and check the server's log"
            ) from e
        raise ServiceError(
            f"could not reach the LLM server at {settings.base_url} ({e.__class__.__name__}: {e}): "
            "is the server running? Check PERSONA_VIDEO_LLM_BASE_URL"
        ) from e
    logger.info("%s answered in %.2f s", settings.label, time.perf_counter() - started_s)


def _sse_content(lines: Iterator[str], settings: OpenAISettings, cancel: threading.Event | None) -> Iterator[str]:
    """The delta contents of a chat completion event stream, up to ``data: [DONE]``."""
    data: list[str] = []
    finish = None
    for line in lines:
        if cancel is not None and cancel.is_set():
            raise Cancelled("the script was cancelled while the model was writing it")
        if line.startswith("data:"):
            data.append(line[5:].removeprefix(" "))
            continue
        if line or not data:
            continue  # a comment (": keep-alive"), another field, or a blank line between events
        event, data = "\n".join(data), []
        if event.strip() == "[DONE]":
            return
        piece, finish = _delta(event, settings, finish)
        if piece:
            yield piece
    if data and "\n".join(data).strip() == "[DONE]":
        return
    if finish is None:
        raise ServiceError(
            f"the connection to {settings.label} broke in the middle of its answer (the stream ended with no "
            "finish_reason and no [DONE]): try again, and check the server's log"
        )


def _delta(event: str, settings: OpenAISettings, finish: str | None) -> tuple[str, str | None]:
    """(the content of one chat.completion.chunk, the finish reason so far), or ServiceError
    for an error the server sent in the stream or a chunk that is not a completion chunk."""
    try:
        chunk = json.loads(event)
    except ValueError as e:
        raise ServiceError(
            f"{settings.label} sent a stream chunk that is not JSON: {_short(event)!r}; check the server's log"
        ) from e
    if not isinstance(chunk, dict):
        raise ServiceError(f"{settings.label} sent a stream chunk that is not a completion chunk: {_short(event)!r}")
    if "error" in chunk:
        error = chunk["error"]
        message = error.get("message") if isinstance(error, dict) else error
        raise ServiceError(
            f"{settings.label} failed in the middle of its answer: {_short(str(message))}; check the server's log"
        )
    choices = chunk.get("choices")
    if not isinstance(choices, list):
        raise ServiceError(f"{settings.label} sent a stream chunk with no choices: {_short(event)!r}")
    if not choices:
        return "", finish  # e.g. a chunk with only usage figures
    choice = choices[0] if isinstance(choices[0], dict) else {}
    delta = choice.get("delta")
    content = delta.get("content") if isinstance(delta, dict) else None
    if content is not None and not isinstance(content, str):
        raise ServiceError(f"{settings.label} sent a delta whose content is not text: {_short(event)!r}")
    reason = choice.get("finish_reason")
    if reason == "content_filter":
        raise ServiceError(f"{settings.label} stopped the answer (content_filter): rephrase the prompt")
    if reason == "length":
        logger.info("%s stopped at max_tokens: its last sentence may be cut", settings.label)
    return content or "", reason or finish


def _whole_content(response: httpx.Response, settings: OpenAISettings) -> str:
    """The text of a whole (not streamed) chat completion, or ServiceError naming what is missing."""
    try:
        content = response.json()["choices"][0]["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError) as e:
        raise ServiceError(
            f"{settings.label} did not answer with a chat completion (no choices[0].message.content): "
            f"{_error_detail(response)}"
        ) from e
    if not isinstance(content, str):
        raise ServiceError(f"{settings.label} answered with no text (message.content is {content!r})")
    return content


def _short(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= _ERROR_CHARS else text[: _ERROR_CHARS - 3] + "..."
