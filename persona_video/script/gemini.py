"""Script writer backed by Gemini, through the official ``google-genai`` SDK.

Used when GEMINI_API_KEY is set. The persona's style prompt and the markup
rules go in the system instruction, the persona's temperature and the
request's max_tokens in the generation config, and a JSON response schema
makes the answer a list of segments (see :mod:`.llm_common`). Every failure
(timeout, HTTP error, blocked prompt, an answer that is not the JSON asked
for) raises :class:`ServiceError`; the script stage falls back to the
offline writer and shows the reason.

Environment:
    GEMINI_API_KEY                   the key (required)
    PERSONA_VIDEO_GEMINI_MODEL       model name, default "gemini-2.5-flash"
    PERSONA_VIDEO_GEMINI_TIMEOUT_S   seconds to wait for the answer, default 30
    PERSONA_VIDEO_GEMINI_BASE_URL    another endpoint (a proxy, or a test server)
"""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import InputError, ServiceError
from ..personas import Persona
from ..settings import env_number
from ..types import ScriptIntent
from .llm_common import SEGMENTS_SCHEMA, segments_from_json, system_instruction, user_message

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemini-2.5-flash"
DEFAULT_TIMEOUT_S = 30.0
#: REST version the SDK talks to; v1beta carries responseSchema and thinkingConfig.
API_VERSION = "v1beta"

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
    timeout_s: seconds to wait for one answer (> 0); there are no retries.
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


def _generation_config(persona: Persona, *, temperature: float, max_tokens: int, model: str) -> Any:
    from google.genai import types

    config: dict[str, Any] = {
        "system_instruction": system_instruction(persona, max_tokens=max_tokens),
        "temperature": temperature,
        "max_output_tokens": max_tokens,
        "response_mime_type": "application/json",
        "response_schema": SEGMENTS_SCHEMA,
    }
    # 2.5 Flash models think by default and thoughts count against
    # max_output_tokens, which would leave a short budget with no script.
    # (2.5 Pro cannot turn thinking off; a truncated answer is reported.)
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
    prompt: str, persona: Persona, *, temperature: float, max_tokens: int, settings: GeminiSettings
) -> ScriptIntent:
    """Ask Gemini for the persona's script of the prompt.

    prompt: what the video explains (already validated).
    temperature: sampling temperature, 0..2.
    max_tokens: the answer's output-token limit (16..2048); the word target is derived from it.
    Returns the segments, pauses clamped into the persona's range.
    Raises ServiceError on a timeout, an HTTP error, a blocked or cut-off answer,
    or an answer that is not the JSON asked for.
    """
    import pydantic
    from google import genai
    from google.genai import errors, types

    http_options = types.HttpOptions(
        base_url=settings.base_url,
        api_version=API_VERSION,
        timeout=max(1, round(settings.timeout_s * 1000)),  # milliseconds
        # One attempt: on failure the pipeline falls back at once instead of waiting out backoff.
        retry_options=types.HttpRetryOptions(attempts=1),
    )
    config = _generation_config(persona, temperature=temperature, max_tokens=max_tokens, model=settings.model)
    started_s = time.perf_counter()
    try:
        with genai.Client(api_key=settings.api_key, http_options=http_options) as client:
            response = client.models.generate_content(
                model=settings.model, contents=user_message(prompt), config=config
            )
    except _transport_errors("TimeoutException") as e:
        raise ServiceError(
            f"Gemini timed out after {settings.timeout_s:g} s: try again, or raise PERSONA_VIDEO_GEMINI_TIMEOUT_S"
        ) from e
    except _transport_errors("TransportError") as e:
        where = settings.base_url or "generativelanguage.googleapis.com"
        raise ServiceError(f"could not reach Gemini at {where} ({e.__class__.__name__}: {e}): check the network") from e
    except errors.APIError as e:
        raise _http_error(e, settings) from e
    except (errors.UnknownApiResponseError, pydantic.ValidationError) as e:
        raise ServiceError(f"Gemini's answer was not a generateContent response: {e}") from e
    logger.info("gemini %s answered in %.2f s", settings.model, time.perf_counter() - started_s)
    return _intent_from_response(response, persona, max_tokens=max_tokens)


def _intent_from_response(response: Any, persona: Persona, *, max_tokens: int) -> ScriptIntent:
    """The script in a GenerateContentResponse, or ServiceError for a blocked or cut-off one."""
    feedback = response.prompt_feedback
    if feedback is not None and feedback.block_reason is not None:
        raise ServiceError(f"Gemini blocked the prompt ({feedback.block_reason}): rephrase the prompt")
    if not response.candidates:
        raise ServiceError("Gemini answered with no script (no candidates): try again or rephrase the prompt")
    finish_reason = response.candidates[0].finish_reason
    finish = getattr(finish_reason, "value", finish_reason)
    if finish not in (None, "STOP", "MAX_TOKENS", "FINISH_REASON_UNSPECIFIED"):
        raise ServiceError(f"Gemini stopped early ({finish}): rephrase the prompt")
    try:
        return segments_from_json(response.text or "", service="Gemini", pause_range_s=persona.script.pause_range_s)
    except ServiceError as e:
        if finish == "MAX_TOKENS":
            raise ServiceError(
                f"Gemini stopped at the max_tokens limit ({max_tokens}) before the script was complete: "
                "raise max_tokens"
            ) from e
        raise
