"""A running Ollama on the loopback address, found with a quick probe.

Many people already run local models through Ollama. ``auto`` asks
``GET /api/tags`` on Ollama's own address (``OLLAMA_HOST``, default
127.0.0.1:11434) with a 200 ms limit; when it answers with a chat model, the
script is written through Ollama's OpenAI-compatible endpoint
(``/v1/chat/completions``) by the OpenAI-compatible writer. Only loopback
addresses are probed: ``auto`` never reaches out to another machine.
``PERSONA_VIDEO_OLLAMA_MODEL`` picks the model; otherwise the first chat model
listed is used (embedding models are skipped).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
import time
from collections.abc import Mapping

import httpx

from .openai_compat import DEFAULT_TIMEOUT_S, OpenAISettings

logger = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1:11434"
#: How long the probe waits for an answer; a closed port answers at once.
PROBE_TIMEOUT_S = 0.2
#: How long a probe's answer is reused (one request resolves its writer a few times).
PROBE_TTL_S = 5.0
_EMBEDDING_HINTS = ("embed", "bge", "minilm", "nomic-bert")

_cache: dict[str, tuple[float, OpenAISettings | None]] = {}
_cache_lock = threading.Lock()


def ollama_address(env: Mapping[str, str]) -> str | None:
    """http://host:port of Ollama from OLLAMA_HOST (or the default), or None when it is
    not a loopback address (``auto`` only probes this machine)."""
    raw = env.get("OLLAMA_HOST", "").strip() or DEFAULT_HOST
    if "://" not in raw:
        raw = "http://" + raw
    url = httpx.URL(raw)
    host = url.host or "127.0.0.1"
    if host == "localhost":
        host = "127.0.0.1"
    try:
        if not ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:
        return None
    port = url.port or 11434
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def _chat_model(models: list, wanted: str) -> str | None:
    names = [str(m.get("name") or m.get("model") or "") for m in models if isinstance(m, dict)]
    names = [n for n in names if n]
    if wanted:
        for name in names:
            if name == wanted or name.split(":")[0] == wanted:
                return name
        return None
    for name in names:
        if not any(hint in name.lower() for hint in _EMBEDDING_HINTS):
            return name
    return None


def probe_ollama(env: Mapping[str, str]) -> OpenAISettings | None:
    """Settings for a running Ollama with a chat model, or None (nothing listens, no chat
    model, the answer is not Ollama's). Takes at most PROBE_TIMEOUT_S; answers are
    reused for PROBE_TTL_S."""
    address = ollama_address(env)
    if address is None:
        return None
    wanted = env.get("PERSONA_VIDEO_OLLAMA_MODEL", "").strip()
    key = f"{address}|{wanted}"
    now = time.monotonic()
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None and now - cached[0] < PROBE_TTL_S:
            return cached[1]
    settings = None
    try:
        response = httpx.get(f"{address}/api/tags", timeout=PROBE_TIMEOUT_S)
        data = response.json() if response.status_code == 200 else {}
        model = _chat_model(data.get("models", []) if isinstance(data, dict) else [], wanted)
        if model:
            settings = OpenAISettings(base_url=f"{address}/v1", model=model, timeout_s=DEFAULT_TIMEOUT_S)
    except (httpx.HTTPError, ValueError) as e:
        logger.debug("no Ollama at %s: %s", address, e)
    with _cache_lock:
        _cache[key] = (time.monotonic(), settings)
    return settings


def forget_probes() -> None:
    """Drop remembered probe answers (after Ollama was started or stopped)."""
    with _cache_lock:
        _cache.clear()
