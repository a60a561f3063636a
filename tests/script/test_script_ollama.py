"""Ollama detection against a loopback server that speaks Ollama's API: ``GET /api/tags``
lists the models, ``POST /v1/chat/completions`` is its OpenAI-compatible chat. ``auto``
finds it, skips embedding models, writes through it; a closed port or a server that
never answers is passed over quickly."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from persona_video.errors import BackendUnavailable
from persona_video.personas import load_persona
from persona_video.script import plan_writer, write_script
from persona_video.script.ollama import PROBE_TIMEOUT_S, forget_probes, ollama_address

TAGS = {
    "models": [
        {"name": "nomic-embed-text:latest", "model": "nomic-embed-text:latest"},
        {"name": "qwen2.5:1.5b", "model": "qwen2.5:1.5b", "details": {"family": "qwen2"}},
    ]
}
ANSWER = {
    "segments": [
        {"text": "A heat pump moves heat instead of making it.", "intent_type": "neutral", "intensity": 0},
        {"text": "", "intent_type": "pause", "intensity": 0, "pause_s": 0.4},
        {"text": "In winter it pulls warmth from the", "intent_type": "neutral", "intensity": 0},
        {"text": "outside air", "intent_type": "emphasis", "intensity": 0.8},
        {"text": "and pumps it indoors.", "intent_type": "neutral", "intensity": 0},
    ]
}


@pytest.fixture
def ollama() -> Iterator[tuple[str, list[dict]]]:
    """A loopback Ollama: its address (for OLLAMA_HOST) and the chat requests it received."""
    chats: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def _json(self, status: int, body: object) -> None:
            payload = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._json(200, TAGS) if self.path == "/api/tags" else self._json(404, {"error": "not found"})

        def do_POST(self) -> None:  # noqa: N802
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
            chats.append({"path": self.path, "body": body})
            message = {"role": "assistant", "content": json.dumps(ANSWER)}
            self._json(200, {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]})

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    forget_probes()
    yield f"127.0.0.1:{server.server_port}", chats
    server.shutdown()
    forget_probes()


def test_auto_finds_a_running_ollama_and_writes_with_its_chat_model(ollama):
    host, chats = ollama
    env = {"OLLAMA_HOST": host}
    plan = plan_writer("auto", env)
    assert plan.name == "ollama" and plan.model == "qwen2.5:1.5b"  # the embedding model is skipped
    script = write_script("How does a heat pump keep a house warm in winter?", load_persona("mkbhd"), env=env)
    assert script.backend == "ollama" and script.model == "qwen2.5:1.5b" and script.notice == ""
    assert "outside air" in script.markup and "*outside air*" in script.markup
    assert chats[0]["path"] == "/v1/chat/completions" and chats[0]["body"]["model"] == "qwen2.5:1.5b"
    assert chats[0]["body"]["temperature"] == pytest.approx(0.6)  # the persona's


def test_a_model_chosen_by_name_must_be_pulled(ollama):
    host, _chats = ollama
    forget_probes()
    assert plan_writer("auto", {"OLLAMA_HOST": host, "PERSONA_VIDEO_OLLAMA_MODEL": "llama3.2"}).name == "offline"
    with pytest.raises(BackendUnavailable, match="ollama pull"):
        plan_writer("ollama", {"OLLAMA_HOST": host, "PERSONA_VIDEO_OLLAMA_MODEL": "llama3.2"})


def test_nothing_listening_is_passed_over_at_once():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again below: nothing listens there
    forget_probes()
    started = time.perf_counter()
    assert plan_writer("auto", {"OLLAMA_HOST": f"127.0.0.1:{port}"}).name == "offline"
    assert time.perf_counter() - started < 1.0


def test_a_server_that_never_answers_is_given_up_on_after_the_probe_limit():
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)  # accepts connections (the kernel does) but never answers
    try:
        forget_probes()
        started = time.perf_counter()
        assert plan_writer("auto", {"OLLAMA_HOST": f"127.0.0.1:{listener.getsockname()[1]}"}).name == "offline"
        assert time.perf_counter() - started < PROBE_TIMEOUT_S + 0.8
    finally:
        listener.close()


def test_only_this_machine_is_probed():
    assert ollama_address({"OLLAMA_HOST": "10.1.2.3:11434"}) is None
    assert ollama_address({"OLLAMA_HOST": "localhost:11500"}) == "http://127.0.0.1:11500"
    assert ollama_address({}) == "http://127.0.0.1:11434"
