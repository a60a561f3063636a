"""The LLM script writers against loopback HTTP servers that speak the real REST shapes.

Gemini is called through the real ``google-genai`` client (base_url pointed at
127.0.0.1), the OpenAI-compatible writer through httpx, exactly as in use; the
servers record every request so the tests check what was sent as well as
what came back.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from persona_video.errors import InputError, ServiceError
from persona_video.personas import load_persona
from persona_video.script.gemini import GeminiSettings, write_with_gemini
from persona_video.script.llm_common import segments_from_json, target_words
from persona_video.script.openai_compat import OpenAISettings, write_with_openai_compatible
from persona_video.types import Segment

SCRIPT = {
    "segments": [
        {"text": "So, the new", "intent_type": "neutral", "intensity": 0},
        {"text": "M4 Mac Mini", "intent_type": "emphasis", "intensity": 1.7},
        {"text": "is small.", "intent_type": "neutral", "intensity": 0},
        {"text": "", "intent_type": "pause", "intensity": 0, "pause_s": 0.9},
        {"text": "And it is fast.", "intent_type": "neutral", "intensity": 0},
    ]
}
EXPECTED = (
    Segment("So, the new", "neutral", 0.0),
    Segment("M4 Mac Mini", "emphasis", 1.0),  # intensity clamped to 1
    Segment("is small.", "neutral", 0.0),
    Segment("", "pause", 0.0, 0.5),  # clamped into mkbhd's 0.4..0.5 s
    Segment("And it is fast.", "neutral", 0.0),
)


@dataclass
class Reply:
    status: int = 200
    body: object = None
    delay_s: float = 0.0


@dataclass
class Loopback:
    """A threaded HTTP server on 127.0.0.1 answering queued replies and recording requests."""

    server: ThreadingHTTPServer
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    state: Loopback

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)})
            reply = state.replies.pop(0) if state.replies else Reply(500, {"error": "no reply queued"})
            if reply.delay_s:
                state.release.wait(reply.delay_s)
            payload = json.dumps(reply.body).encode()
            try:
                self.send_response(reply.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up (timeout test)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Loopback(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def persona():
    return load_persona("mkbhd")


# ---------------------------------------------------------------- Gemini


def gemini_answer(text: str, finish_reason: str = "STOP") -> dict:
    return {
        "candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "finishReason": finish_reason}],
        "usageMetadata": {"promptTokenCount": 310, "candidatesTokenCount": 120, "totalTokenCount": 430},
        "modelVersion": "gemini-2.5-flash",
    }


def gemini_error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


def gemini_settings(loopback: Loopback, timeout_s: float = 5.0) -> GeminiSettings:
    return GeminiSettings(api_key="test-key", model="gemini-2.5-flash", timeout_s=timeout_s, base_url=loopback.url)


def test_gemini_success_sends_persona_config_and_parses_segments(loopback, persona):
    loopback.replies.append(Reply(200, gemini_answer(json.dumps(SCRIPT))))
    intent = write_with_gemini(
        "Explain the M4 Mac Mini", persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback)
    )
    assert intent.segments == EXPECTED
    assert len(loopback.requests) == 1
    request = loopback.requests[0]
    assert request["path"] == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert request["headers"]["x-goog-api-key"] == "test-key"
    body = request["body"]
    system = body["systemInstruction"]["parts"][0]["text"]
    assert persona.style_prompt in system
    assert "between 0.4 and 0.5 seconds" in system
    assert "Emphasise 1 to 2 words per sentence" in system
    assert f"About {target_words(400)} spoken words" in system
    assert "Explain the M4 Mac Mini" in body["contents"][0]["parts"][0]["text"]
    config = body["generationConfig"]
    assert config["temperature"] == pytest.approx(persona.script.temperature)
    assert config["maxOutputTokens"] == 400
    assert config["responseMimeType"] == "application/json"
    schema = config["responseSchema"]
    assert schema["type"] == "OBJECT"
    item = schema["properties"]["segments"]["items"]
    assert item["properties"]["intent_type"]["enum"] == ["pause", "neutral", "emphasis"]
    # Flash thinks by default; its thoughts would eat the max_tokens budget.
    thinking = config["thinkingConfig"]
    assert thinking.get("thinkingBudget", thinking.get("thinking_budget")) == 0


@pytest.mark.parametrize(
    ("status", "error_status", "expected"),
    [(429, "RESOURCE_EXHAUSTED", "HTTP 429 (quota exceeded)"), (500, "INTERNAL", "HTTP 500 (server error)")],
)
def test_gemini_http_errors_are_readable_and_not_retried(loopback, persona, status, error_status, expected):
    loopback.replies.append(Reply(status, gemini_error(status, error_status, "upstream says no")))
    with pytest.raises(ServiceError) as caught:
        write_with_gemini("Explain tides", persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback))
    message = str(caught.value)
    assert message.startswith(f"Gemini answered {expected}")
    assert "upstream says no" in message
    assert caught.value.__cause__ is not None
    assert len(loopback.requests) == 1


def test_gemini_malformed_json_answer(loopback, persona):
    loopback.replies.append(Reply(200, gemini_answer('{"segments": [{"text": "Hi", "intent_type": ')))
    with pytest.raises(ServiceError, match="Gemini answered with something other than the JSON asked for: not valid"):
        write_with_gemini("Explain tides", persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback))


def test_gemini_cut_off_at_max_tokens_says_so(loopback, persona):
    loopback.replies.append(Reply(200, gemini_answer('{"segments": [{"text": "Tides are', "MAX_TOKENS")))
    with pytest.raises(ServiceError, match=r"max_tokens limit \(64\).*raise max_tokens"):
        write_with_gemini("Explain tides", persona, temperature=0.6, max_tokens=64, settings=gemini_settings(loopback))


def test_gemini_blocked_prompt(loopback, persona):
    loopback.replies.append(Reply(200, {"promptFeedback": {"blockReason": "SAFETY"}}))
    with pytest.raises(ServiceError, match="Gemini blocked the prompt .*SAFETY"):
        write_with_gemini("Explain tides", persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback))


def test_gemini_timeout(loopback, persona):
    loopback.replies.append(Reply(200, gemini_answer(json.dumps(SCRIPT)), delay_s=5.0))
    settings = gemini_settings(loopback, timeout_s=0.5)
    with pytest.raises(ServiceError, match=r"Gemini timed out after 0\.5 s"):
        write_with_gemini("Explain tides", persona, temperature=0.6, max_tokens=400, settings=settings)
    assert len(loopback.requests) == 1


def test_gemini_settings_from_env():
    assert GeminiSettings.from_env({}) is None
    assert GeminiSettings.from_env({"GEMINI_API_KEY": "  "}) is None
    settings = GeminiSettings.from_env({"GEMINI_API_KEY": "k"})
    assert settings == GeminiSettings(api_key="k", model="gemini-2.5-flash", timeout_s=30.0, base_url=None)
    settings = GeminiSettings.from_env(
        {
            "GEMINI_API_KEY": "k",
            "PERSONA_VIDEO_GEMINI_MODEL": "gemini-2.5-pro",
            "PERSONA_VIDEO_GEMINI_TIMEOUT_S": "12.5",
            "PERSONA_VIDEO_GEMINI_BASE_URL": "http://127.0.0.1:9",
        }
    )
    assert (settings.model, settings.timeout_s, settings.base_url) == ("gemini-2.5-pro", 12.5, "http://127.0.0.1:9")
    with pytest.raises(InputError, match="PERSONA_VIDEO_GEMINI_TIMEOUT_S"):
        GeminiSettings.from_env({"GEMINI_API_KEY": "k", "PERSONA_VIDEO_GEMINI_TIMEOUT_S": "soon"})


# ---------------------------------------------------------------- OpenAI-compatible


def chat_answer(content: str, finish_reason: str = "stop") -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "llama3.2",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}],
        "usage": {"prompt_tokens": 300, "completion_tokens": 120, "total_tokens": 420},
    }


def openai_settings(loopback: Loopback, timeout_s: float = 5.0, api_key: str | None = None) -> OpenAISettings:
    return OpenAISettings(base_url=f"{loopback.url}/v1", model="llama3.2", api_key=api_key, timeout_s=timeout_s)


def test_openai_success_sends_persona_config_and_parses_fenced_answer(loopback, persona):
    fenced = "```json\n" + json.dumps(SCRIPT, indent=2) + "\n```"
    loopback.replies.append(Reply(200, chat_answer(fenced)))
    settings = openai_settings(loopback, api_key="sk-local")
    intent = write_with_openai_compatible(
        "Explain the M4 Mac Mini", persona, temperature=0.6, max_tokens=300, settings=settings
    )
    assert intent.segments == EXPECTED
    assert len(loopback.requests) == 1
    request = loopback.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-local"
    body = request["body"]
    assert body["model"] == "llama3.2"
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert persona.style_prompt in body["messages"][0]["content"]
    assert "between 0.4 and 0.5 seconds" in body["messages"][0]["content"]
    assert "Explain the M4 Mac Mini" in body["messages"][1]["content"]
    assert body["temperature"] == pytest.approx(0.6)
    assert body["max_tokens"] == 300
    assert body["response_format"] == {"type": "json_object"}


def test_openai_retries_once_without_response_format_on_400(loopback, persona):
    loopback.replies.append(Reply(400, {"error": {"message": "response_format is not supported"}}))
    loopback.replies.append(Reply(200, chat_answer(json.dumps(SCRIPT))))
    intent = write_with_openai_compatible(
        "Explain tides", persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
    )
    assert intent.segments == EXPECTED
    assert len(loopback.requests) == 2
    assert "response_format" in loopback.requests[0]["body"]
    assert "response_format" not in loopback.requests[1]["body"]
    assert "Authorization" not in loopback.requests[0]["headers"]


def test_openai_second_400_is_reported(loopback, persona):
    loopback.replies.append(Reply(400, {"error": {"message": "bad"}}))
    loopback.replies.append(Reply(400, {"error": {"message": "model 'llama3.2' does not fit"}}))
    with pytest.raises(ServiceError, match=r"llama3\.2 at .* answered HTTP 400: model 'llama3\.2' does not fit"):
        write_with_openai_compatible(
            "Explain tides", persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
        )
    assert len(loopback.requests) == 2


@pytest.mark.parametrize("status", [429, 500])
def test_openai_http_errors_are_readable(loopback, persona, status):
    loopback.replies.append(Reply(status, {"error": {"message": f"upstream {status}"}}))
    with pytest.raises(ServiceError, match=rf"answered HTTP {status}: upstream {status}"):
        write_with_openai_compatible(
            "Explain tides", persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
        )
    assert len(loopback.requests) == 1


def test_openai_malformed_json_answer(loopback, persona):
    loopback.replies.append(Reply(200, chat_answer("Sure! Here is your script: segments: hello")))
    with pytest.raises(ServiceError, match="other than the JSON asked for: not valid JSON"):
        write_with_openai_compatible(
            "Explain tides", persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
        )


def test_openai_timeout(loopback, persona):
    loopback.replies.append(Reply(200, chat_answer(json.dumps(SCRIPT)), delay_s=5.0))
    with pytest.raises(ServiceError, match=r"timed out after 0\.5 s") as caught:
        write_with_openai_compatible(
            "Explain tides", persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback, 0.5)
        )
    assert caught.value.__cause__ is not None


def test_openai_unreachable_server(persona):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()  # nothing listens on the port now
    settings = OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1", model="llama3.2", api_key=None, timeout_s=2)
    with pytest.raises(ServiceError, match="could not reach the LLM server .* is the server running"):
        write_with_openai_compatible("Explain tides", persona, temperature=0.6, max_tokens=300, settings=settings)


def test_openai_settings_from_env():
    assert OpenAISettings.from_env({}) is None
    assert OpenAISettings.from_env({"PERSONA_VIDEO_LLM_BASE_URL": "http://127.0.0.1:11434/v1"}) is None
    assert OpenAISettings.from_env({"PERSONA_VIDEO_LLM_MODEL": "llama3.2"}) is None
    settings = OpenAISettings.from_env(
        {"PERSONA_VIDEO_LLM_BASE_URL": "http://127.0.0.1:11434/v1/", "PERSONA_VIDEO_LLM_MODEL": "llama3.2"}
    )
    assert settings == OpenAISettings("http://127.0.0.1:11434/v1", "llama3.2", None, 60.0)
    with pytest.raises(InputError, match="must start with http"):
        OpenAISettings.from_env({"PERSONA_VIDEO_LLM_BASE_URL": "127.0.0.1:11434", "PERSONA_VIDEO_LLM_MODEL": "m"})


# ---------------------------------------------------------------- answer validation


def test_segments_from_json_cleans_and_tolerates():
    answer = json.dumps(
        {
            "segments": [
                {"text": "Wow 🚀 [laughs] this is *huge*", "intent_type": "Neutral", "intensity": -3},
                {"text": "", "intent_type": "emphasis", "intensity": 0.5},  # empty speech: dropped
                {"text": "and", "intent_type": "pause", "pause_s": 0.3},  # words in a pause are kept after it
                {"text": "fast", "intent_type": "emphasis"},
            ]
        }
    )
    intent = segments_from_json("Here you go:\n" + answer + "\nEnjoy!")
    assert intent.segments == (
        Segment("Wow this is huge", "neutral", 0.0),
        Segment("", "pause", 0.0, 0.3),
        Segment("and", "neutral", 0.0),
        Segment("fast", "emphasis", 0.8),
    )


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("", "the answer was empty"),
        ("[1, 2]", 'expected an object with a "segments" list'),
        ('{"segments": []}', "the script has no spoken words"),
        ('{"segments": [{"text": "", "intent_type": "pause", "pause_s": 0.4}]}', "the script has no spoken words"),
        ('{"segments": [{"text": "Hi", "intent_type": "shout"}]}', "segment 0: 'intent_type' must be one of"),
        ('{"segments": [{"text": "Hi", "intent_type": "emphasis", "intensity": "high"}]}', "must be a number"),
        ('{"segments": ["Hi"]}', "segment 0 is str, not an object"),
        ('{"segments": [{"text": "", "intent_type": "pause", "pause_s": -1}]}', "'pause_s' must be positive"),
    ],
)
def test_segments_from_json_rejects_malformed(answer, reason):
    with pytest.raises(ServiceError, match="^Gemini answered with something other than the JSON asked for: ") as caught:
        segments_from_json(answer, service="Gemini")
    assert reason in str(caught.value)
