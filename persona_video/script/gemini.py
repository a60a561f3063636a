"""Script writer backed by Gemini, through the official ``google-genai`` SDK.

Used when GEMINI_API_KEY is set. The persona's style prompt and the rules of
the script markup go in the system instruction (the local model's, see
:mod:`.local_writer`), the persona's temperature, the request's max_tokens and
the seed in the generation config. The answer streams
(``streamGenerateContent?alt=sse``): its markup goes on piece by piece, so
each sentence is final as soon as Gemini begins the next. Markup rather than
the segments JSON because a half-written JSON cannot be cut into final
sentences, and markup costs a third of the tokens. Every failure (timeout,
HTTP error before or during the stream, a broken connection, a blocked
prompt, a chunk that is not Gemini's) raises :class:`ServiceError`; the
script stage keeps the sentences already final or falls back to the offline
writer, and shows the reason.

Environment:
    GEMINI_API_KEY                   the key (required)
    PERSONA_VIDEO_GEMINI_MODEL       model name, default "gemini-2.5-flash"
    PERSONA_VIDEO_GEMINI_TIMEOUT_S   seconds to wait for the answer to start or go on, default 30
    PERSONA_VIDEO_GEMINI_BASE_URL    another endpoint (a proxy, or a test server)
"""

from __future__ import annotations

import importlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import Cancelled, InputError, ServiceError
from ..personas import Persona
from ..settings import env_number
from .llm_common import answer_pieces
from .local_writer import length_request, markup_instruction

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemini-2.5-flash"
DEFAULT_TIMEOUT_S = 30.0
#: REST version the SDK talks to; v1beta carries thinkingConfig.
API_VERSION = "v1beta"
_DETAIL_CHARS = 200

_HTTP_REASONS = {
    400: "bad request",
    401: "API key rejected",
    403: "permission denied",
    404: "model not found",
    429: "quota exceeded",
}
_HTTP_FIXES = {
    400: "check PERSONA_VIDEO_GEMINI_MODEL and the prompt",
    401: "check GEMINI_API_KEY",
    403: "check that GEMINI_API_KEY may use this model",
    404: "set PERSONA_VIDEO_GEMINI_MODEL to a model your key can use, e.g. gemini-2.5-flash",
    429: "wait a minute, or check your plan's quota",
}


@dataclass(frozen=True)
class GeminiSettings:
    """How to reach Gemini.

    api_key: the GEMINI_API_KEY.
    model: model name, e.g. "gemini-2.5-flash".
    timeout_s: seconds to wait for the answer to start, and for each next chunk (> 0); there are no retries.
    base_url: endpoint root instead of Google's (a proxy or a test server); None for the default.
    """

    api_key: str
    model: str = DEFAULT_MODEL
    timeout_s: float = DEFAULT_TIMEOUT_S
    base_url: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> GeminiSettings | None:
        """Settings from the environment; None when GEMINI_API_KEY is unset or empty."""
        api_key = env.get("GEMINI_API_KEY", "").strip()
        if not api_key:
            return None
        timeout_s = env_number(
            "PERSONA_VIDEO_GEMINI_TIMEOUT_S",
            DEFAULT_TIMEOUT_S,
            example="30 (seconds)",
            positive=True,
            env=env,
            error=InputError,
        )
        return cls(
            api_key=api_key,
            model=env.get("PERSONA_VIDEO_GEMINI_MODEL", "").strip() or DEFAULT_MODEL,
            timeout_s=timeout_s,
            base_url=env.get("PERSONA_VIDEO_GEMINI_BASE_URL", "").strip() or None,
        )


def _generation_config(persona: Persona, *, temperature: float, max_tokens: int, seed: int, model: str) -> Any:
    from google.genai import types

    config: dict[str, Any] = {
        "system_instruction": markup_instruction(persona),
        "temperature": temperature,
        "max_output_tokens": max_tokens,
        "seed": seed,
    }
    # 2.5 Flash models think by default and thoughts count against
    # max_output_tokens, which would leave a short budget with no script.
    # (2.5 Pro cannot turn thinking off; a script cut short ends at its last full sentence.)
    if model.removeprefix("models/").startswith("gemini-2.5-flash"):
        config["thinking_config"] = types.ThinkingConfig(thinking_budget=0)
    return types.GenerateContentConfig(**config)


def _transport_errors(name: str) -> tuple[type[BaseException], ...]:
    """The exception class ``name`` of both HTTP clients the SDK may use: httpx2 (the
    default of google-genai 3.x) and httpx (with GOOGLE_GENAI_HTTP_CLIENT=httpx)."""
    classes = []
    for module_name in ("httpx2", "httpx"):
        try:
            module = importlib.import_module(module_name)
        except ImportError:
            continue
        classes.append(getattr(module, name))
    return tuple(classes)


def _http_error(e: Any, settings: GeminiSettings) -> ServiceError:
    """A readable ServiceError for the SDK's APIError (ClientError / ServerError)."""
    code = int(e.code) if isinstance(e.code, int) else 0
    reason = _HTTP_REASONS.get(code, "server error" if code >= 500 else "error")
    fix = _HTTP_FIXES.get(code, "try again later" if code >= 500 else "check the Gemini settings")
    detail = f": {str(e.message).strip().rstrip('.')}" if e.message else ""
    if code in (400, 404):
        fix = f"{fix} (the model now is {settings.model!r})"
    return ServiceError(f"Gemini answered HTTP {code} ({reason}){detail}; {fix}")


def write_with_gemini(
    prompt: str,
    persona: Persona,
    *,
    temperature: float,
    max_tokens: int,
    settings: GeminiSettings,
    seed: int = 0,
    cancel: threading.Event | None = None,
) -> Iterator[str]:
    """Stream the persona's script of the prompt from Gemini, as markup pieces.

    prompt: what the video explains (already validated).
    temperature: sampling temperature, 0..2.
    max_tokens: the answer's output-token limit (16..2048); the word target is derived from it.
    seed: Gemini's sampling seed (a retry asks with another).
    Yields the markup as Gemini writes it (``streamGenerateContent``, server-sent events).
    Raises ServiceError on a timeout, an HTTP error (before or during the stream), a
    broken connection, a blocked or stopped answer, or a chunk that is not Gemini's;
    Cancelled between chunks once ``cancel`` is set.
    """
    chunks = _stream_chunks(
        prompt, persona, temperature=temperature, max_tokens=max_tokens, seed=seed, settings=settings, cancel=cancel
    )
    yield from answer_pieces(chunks, service="Gemini", pause_range_s=persona.script.pause_range_s)


def _stream_chunks(
    prompt: str,
    persona: Persona,
    *,
    temperature: float,
    max_tokens: int,
    seed: int,
    settings: GeminiSettings,
    cancel: threading.Event | None,
) -> Iterator[str]:
    """The text of each streamed chunk, as the SDK's exceptions turned into ServiceError."""
    import pydantic
    from google import genai
    from google.genai import errors, types

    http_options = types.HttpOptions(
        base_url=settings.base_url,
        api_version=API_VERSION,
        timeout=max(1, round(settings.timeout_s * 1000)),  # milliseconds, per read
        # One attempt: on failure the pipeline falls back at once instead of waiting out backoff.
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    config = _generation_config(
        persona, temperature=temperature, max_tokens=max_tokens, seed=seed, model=settings.model
    )
    started_s = time.perf_counter()
    written = False  # whether any text came, for what a broken connection means
    finish = None
    try:
        with genai.Client(api_key=settings.api_key, http_options=http_options) as client:
            stream = client.models.generate_content_stream(
                model=settings.model, contents=length_request(prompt, max_tokens), config=config
            )
            for chunk in stream:
                if cancel is not None and cancel.is_set():
                    raise Cancelled("the script was cancelled while Gemini was writing it")
                text, finish = _chunk_text(chunk, finish)
                if text:
                    written = True
                    yield text
    except _transport_errors("TimeoutException") as e:
        raise ServiceError(
            f"Gemini timed out after {settings.timeout_s:g} s"
            f"{' in the middle of its answer' if written else ''}: try again, or raise PERSONA_VIDEO_GEMINI_TIMEOUT_S"
        ) from e
    except _transport_errors("TransportError") as e:
        where = settings.base_url or "generativelanguage.googleapis.com"
        if written:
            raise ServiceError(
                f"the connection to Gemini at {where} broke in the middle of its answer "
                f"({e.__class__.__name__}: {e}): try again"
            ) from e
        raise ServiceError(f"could not reach Gemini at {where} ({e.__class__.__name__}: {e}): check the network") from e
    except errors.APIError as e:
        raise _http_error(e, settings) from e
    except (errors.UnknownApiResponseError, pydantic.ValidationError) as e:
        detail = " ".join(str(e).split())[:_DETAIL_CHARS]
        raise ServiceError(f"Gemini's answer was not a streamGenerateContent response: {detail}") from e
    if finish is None:
        # Gemini's last chunk carries the finish reason; a stream cut off mid-way may end cleanly
        where = settings.base_url or "generativelanguage.googleapis.com"
        when = "in the middle of its answer" if written else "before its answer"
        raise ServiceError(
            f"the connection to Gemini at {where} broke {when} (the stream ended with no finish reason): try again"
        )
    if not written:
        raise ServiceError("Gemini answered with no script (no text): try again or rephrase the prompt")
    if finish == "MAX_TOKENS":
        logger.info("gemini %s stopped at max_tokens (%d): its last sentence may be cut", settings.model, max_tokens)
    logger.info("gemini %s answered in %.2f s", settings.model, time.perf_counter() - started_s)


def _chunk_text(chunk: Any, finish: str | None) -> tuple[str, str | None]:
    """(the text of one GenerateContentResponse chunk, the finish reason so far), or
    ServiceError for a blocked prompt or an answer stopped for another reason."""
    feedback = chunk.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise ServiceError(f"Gemini blocked the prompt ({feedback.block_reason}): rephrase the prompt")
    if not chunk.candidates:
        return "", finish  # e.g. a chunk with only usage figures
    candidate = chunk.candidates[0]
    reason = getattr(candidate.finish_reason, "value", candidate.finish_reason)
    if reason not in (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"):
        raise ServiceError(f"Gemini stopped early ({reason}): rephrase the prompt")
    parts = candidate.content.parts if candidate.content is not None and candidate.content.parts else []
    text = "".join(part.text for part in parts if part.text and not part.thought)
    return text, reason or finish
