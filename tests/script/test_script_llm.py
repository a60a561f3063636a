"""The LLM script writers against loopback HTTP servers that speak the real wire formats.

Gemini is called through the real ``google-genai`` client (base_url pointed at
127.0.0.1), the OpenAI-compatible writer through httpx, exactly as in use. The
servers stream as the services do: server-sent events over a chunked
response, one event per chunk (Gemini's ``streamGenerateContent?alt=sse``, the
OpenAI ``stream: true`` chunks ending in ``data: [DONE]``), with small gaps. A
``Hold`` in a reply stops the server until the test releases it, which shows a
sentence reaching the caller while the rest of the answer is not yet sent. The
servers record every request, so the tests check what was sent as well.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from persona_video.errors import Cancelled, InputError, ServiceError
from persona_video.personas import load_persona
from persona_video.script import split_sentences, stream_script
from persona_video.script.gemini import GeminiSettings, write_with_gemini
from persona_video.script.llm_common import answer_pieces, segments_from_json, target_words
from persona_video.script.markup import to_markup
from persona_video.script.openai_compat import OpenAISettings, write_with_openai_compatible
from persona_video.types import ScriptIntent, Segment

PROMPT = "Explain the M4 Mac Mini"
# What the model writes: a preamble (dropped), a sentence with one emphasis too many for
# mkbhd (cut to two), a pause after it, and two more sentences.
MARKUP = (
    "Sure, here is a script for your video. So, the new *M4 Mac Mini* is *small*, *quiet* and *fast*. [pause] "
    "It costs *six hundred* dollars. And it fits in one hand."
)
# Where the server holds in the streaming tests: the second sentence (the first one kept) is
# final once the third has begun; the rest is not sent before the test has that sentence.
HELD_AT = MARKUP.index("It costs") + len("It c")
CHUNK_CHARS = 7
#: Seconds between two chunks the servers send (the services trickle too).
CHUNK_GAP_S = 0.003

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
class Hold:
    """In a streamed reply: the server sends nothing more until ``release`` is set."""

    release: threading.Event = field(default_factory=threading.Event)
    passed: bool = False  # set by the server once it goes on


@dataclass(frozen=True)
class Raw:
    """In a streamed reply: bytes sent as they are, not as a ``data:`` event (an SSE comment)."""

    text: str


#: In a streamed reply: the server drops the connection there, with the response unfinished.
BREAK = "<break the connection>"


@dataclass
class Reply:
    """One answer: a JSON body (status, body), or a stream of server-sent events (events:
    each a JSON value or a data string, Raw bytes, a Hold, or BREAK), after delay_s seconds."""

    status: int = 200
    body: object = None
    delay_s: float = 0.0
    events: list | None = None


@dataclass
class Loopback:
    """A threaded HTTP server on 127.0.0.1 answering queued replies and recording requests."""

    server: ThreadingHTTPServer
    replies: list[Reply] = field(default_factory=list)
    requests: list[dict] = field(default_factory=list)
    release: threading.Event = field(default_factory=threading.Event)
    holds: list[Hold] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"


@pytest.fixture
def loopback() -> Iterator[Loopback]:
    state: Loopback

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # chunked responses, as the services send

        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            state.requests.append({"path": self.path, "headers": dict(self.headers), "body": json.loads(raw)})
            reply = state.replies.pop(0) if state.replies else Reply(500, {"error": "no reply queued"})
            if reply.delay_s:
                state.release.wait(reply.delay_s)
            try:
                if reply.events is None:
                    self._send_whole(reply)
                else:
                    self._send_events(reply.events)
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout, cancel)

        def _send_whole(self, reply: Reply) -> None:
            payload = json.dumps(reply.body).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def _send_events(self, events: list) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            for event in events:
                if isinstance(event, Hold):
                    state.holds.append(event)
                    event.release.wait(30)
                    event.passed = True
                    continue
                if event == BREAK:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                if isinstance(event, Raw):
                    frame = event.text.encode()
                else:
                    frame = f"data: {event if isinstance(event, str) else json.dumps(event)}\n\n".encode()
                self.wfile.write(f"{len(frame):X}\r\n".encode() + frame + b"\r\n")
                time.sleep(CHUNK_GAP_S)
            self.wfile.write(b"0\r\n\r\n")

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state = Loopback(server)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield state
    state.release.set()
    for hold in state.holds:
        hold.release.set()
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def persona():
    return load_persona("mkbhd")


def cut(text: str, chars: int = CHUNK_CHARS) -> list[str]:
    """Text in the pieces a model streams it in (mid-word, as tokens fall)."""
    return [text[i : i + chars] for i in range(0, len(text), chars)]


# ---------------------------------------------------------------- the two wire formats


def gemini_chunk(text: str, finish_reason: str | None = None) -> dict:
    candidate: dict = {"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}
    if finish_reason:
        candidate["finishReason"] = finish_reason
    return {"candidates": [candidate], "modelVersion": "gemini-2.5-flash"}


def gemini_events(*parts: object, finish_reason: str | None = "STOP", chars: int = CHUNK_CHARS) -> list:
    """Gemini's stream of the texts in parts (cut into chunks), Holds and BREAKs in place;
    the last chunk carries the finish reason and the usage, as Gemini's does."""
    events: list = []
    for part in parts:
        if isinstance(part, str):
            events.extend(gemini_chunk(piece) for piece in cut(part, chars))
        else:
            events.append(part)
    if finish_reason:
        last = gemini_chunk("", finish_reason)
        last["usageMetadata"] = {"promptTokenCount": 310, "candidatesTokenCount": 60, "totalTokenCount": 370}
        events.append(last)
    return events


def gemini_error(code: int, status: str, message: str) -> dict:
    return {"error": {"code": code, "message": message, "status": status}}


def gemini_settings(loopback: Loopback, timeout_s: float = 5.0) -> GeminiSettings:
    return GeminiSettings(api_key="test-key", model="gemini-2.5-flash", timeout_s=timeout_s, base_url=loopback.url)


def openai_chunk(delta: dict, finish_reason: str | None = None) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "model": "llama3.2",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
    }


def openai_events(*parts: object, finish_reason: str | None = "stop", chars: int = CHUNK_CHARS) -> list:
    """An OpenAI-compatible stream of the texts in parts: the role first, the content in
    chunks (Holds and BREAKs in place), then (unless finish_reason is None) a chunk with
    the finish reason and [DONE]."""
    events: list = [openai_chunk({"role": "assistant", "content": ""})]
    for part in parts:
        if isinstance(part, str):
            events.extend(openai_chunk({"content": piece}) for piece in cut(part, chars))
        else:
            events.append(part)
    if finish_reason:
        events += [openai_chunk({}, finish_reason), "[DONE]"]
    return events


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


@dataclass(frozen=True)
class Wire:
    """One writer and the wire format its server speaks."""

    name: str
    env: Callable[[Loopback, float], dict]
    events: Callable[..., list]
    whole: Callable[[str], Reply]  # the answer in one piece, as a server that does not stream it
    error_event: dict  # what the server sends when it fails in the middle of the answer
    error_says: str
    write: Callable[..., Iterator[str]]
    settings: Callable[[Loopback, float], object]


WIRES = {
    "gemini": Wire(
        name="gemini",
        env=lambda loopback, timeout_s: {
            "GEMINI_API_KEY": "test-key",
            "PERSONA_VIDEO_GEMINI_BASE_URL": loopback.url,
            "PERSONA_VIDEO_GEMINI_TIMEOUT_S": str(timeout_s),
        },
        events=gemini_events,
        whole=lambda text: Reply(events=[gemini_chunk(text, "STOP")]),
        error_event=gemini_error(500, "INTERNAL", "the backend crashed"),
        error_says="Gemini answered HTTP 500 (server error): the backend crashed",
        write=write_with_gemini,
        settings=gemini_settings,
    ),
    "openai": Wire(
        name="openai",
        env=lambda loopback, timeout_s: {
            "PERSONA_VIDEO_LLM_BASE_URL": f"{loopback.url}/v1",
            "PERSONA_VIDEO_LLM_MODEL": "llama3.2",
            "PERSONA_VIDEO_LLM_TIMEOUT_S": str(timeout_s),
        },
        events=openai_events,
        whole=lambda text: Reply(200, chat_answer(text)),
        error_event={"error": {"message": "the backend crashed", "type": "server_error"}},
        error_says="failed in the middle of its answer: the backend crashed",
        write=write_with_openai_compatible,
        settings=openai_settings,
    ),
}


@pytest.fixture(params=sorted(WIRES))
def wire(request) -> Wire:
    return WIRES[request.param]


def run(wire: Wire, loopback: Loopback, persona, *, timeout_s: float = 5.0, **kwargs) -> list:
    return list(stream_script(PROMPT, persona, env=wire.env(loopback, timeout_s), **kwargs))


# ---------------------------------------------------------------- streaming, both writers


def test_sentences_arrive_while_the_model_is_still_writing(loopback, persona, wire):
    hold = Hold()
    loopback.replies.append(Reply(events=wire.events(MARKUP[:HELD_AT], hold, MARKUP[HELD_AT:])))
    drafts = []
    for draft in stream_script(PROMPT, persona, env=wire.env(loopback, 5.0)):
        if draft.sentences and not hold.release.is_set():
            # the first sentence is out while the server still holds the rest of the answer back
            assert draft.backend == wire.name and not hold.passed and "dollars" not in draft.text
            assert [s.spoken_text for s in draft.sentences] == ["So, the new M4 Mac Mini is small, quiet and fast."]
            hold.release.set()
        drafts.append(draft)
    assert hold.passed and len(loopback.requests) == 1
    final = drafts[-1]
    assert final.script is not None and final.script.backend == wire.name and final.script.notice == ""
    streamed = drafts[:-1]
    for before, after in zip(streamed, streamed[1:]):
        assert MARKUP.startswith(before.text) and after.text.startswith(before.text)  # text only grows
        assert after.sentences[: len(before.sentences)] == before.sentences  # sentences only append
    assert streamed[-1].text == MARKUP
    # the preamble is dropped; the persona's emphasis budget (two) holds; the pause stays with its sentence
    assert [s.spoken_text for s in final.sentences] == [
        "So, the new M4 Mac Mini is small, quiet and fast.",
        "It costs six hundred dollars.",
        "And it fits in one hand.",
    ]
    first = final.sentences[0].segments
    assert sum(seg.intent_type == "emphasis" for seg in first) == 2 and first[-1].intent_type == "pause"
    # the finished script, cut into sentences, gives back the very sentences streamed before it
    assert split_sentences(final.script.intent) == list(final.sentences) == list(streamed[-1].sentences)


def test_the_streamed_script_is_the_script_of_the_whole_answer(loopback, persona, wire):
    loopback.replies.append(Reply(events=wire.events(MARKUP, chars=3)))
    loopback.replies.append(wire.whole(MARKUP))
    streamed, whole = run(wire, loopback, persona)[-1].script, run(wire, loopback, persona)[-1].script
    assert streamed == whole and streamed.backend == wire.name
    # the third star is over mkbhd's budget; the sentence the model left unmarked gets the persona's rules
    assert streamed.markup == (
        "So, the new *M4 Mac Mini* is *small*, quiet and fast. [pause] It costs *six hundred* dollars. "
        "And it *fits*{0.6} in one hand."
    )


def test_pause_lengths_the_model_writes_keep_to_the_personas_range(loopback, persona, wire):
    # mkbhd pauses 0.4-0.5 s: a model's two seconds and its tenth are brought into that range
    markup = "So, the new *M4 Mac Mini* is small. [pause 2] It costs *six hundred* dollars. [pause 0.1] Done."
    loopback.replies.append(Reply(events=wire.events(markup, chars=5)))
    script = run(wire, loopback, persona)[-1].script
    pauses = [seg.pause_s for seg in script.intent.segments if seg.intent_type == "pause"]
    assert pauses == [persona.script.pause_range_s[1], persona.script.pause_range_s[0]]
    assert "[pause 0.5]" in script.markup and "[pause 0.4]" in script.markup


def test_a_failure_in_the_middle_of_the_stream_keeps_the_final_sentences_and_says_why(loopback, persona, wire):
    loopback.replies.append(Reply(events=[*wire.events(MARKUP[:HELD_AT], finish_reason=None), wire.error_event]))
    final = run(wire, loopback, persona)[-1]
    assert final.script.backend == wire.name
    assert [s.spoken_text for s in final.sentences] == ["So, the new M4 Mac Mini is small, quiet and fast."]
    assert wire.error_says in final.script.notice and "the backend crashed" in final.script.notice
    assert "the script ends after what was written" in final.script.notice
    assert len(loopback.requests) == 1  # a service that failed is not asked again


def test_a_connection_broken_before_a_sentence_is_final_falls_back_with_the_reason(loopback, persona, wire):
    loopback.replies.append(Reply(events=wire.events("So, the new *M4 Mac", BREAK, finish_reason=None)))
    final = run(wire, loopback, persona)[-1]
    assert final.script.backend == "offline" and "mac mini" in final.script.markup.lower()
    notice = final.script.notice
    assert "broke in the middle of its answer" in notice and notice.endswith("used the offline writer instead.")
    assert len(loopback.requests) == 1


def test_a_malformed_chunk_is_a_clear_error(loopback, persona, wire):
    loopback.replies.append(Reply(events=[*wire.events("So, the new", finish_reason=None), "{not json"]))
    settings = wire.settings(loopback, 5.0)
    pieces = wire.write(PROMPT, persona, temperature=0.6, max_tokens=400, settings=settings)
    assert next(pieces) == "So, the new"[:CHUNK_CHARS]
    with pytest.raises(ServiceError, match="not (a streamGenerateContent response|JSON)") as caught:
        list(pieces)
    assert "{not json" in str(caught.value)


def test_a_stream_that_stalls_times_out_instead_of_hanging(loopback, persona, wire):
    loopback.replies.append(Reply(events=wire.events("So, the new *M4 Mac", Hold(), " Mini* is small.")))
    settings = wire.settings(loopback, 0.5)
    with pytest.raises(ServiceError, match=r"timed out after 0\.5 s in the middle of its answer"):
        list(wire.write(PROMPT, persona, temperature=0.6, max_tokens=400, settings=settings))


def test_cancel_stops_the_stream_between_chunks(loopback, persona, wire):
    hold = Hold()
    loopback.replies.append(Reply(events=wire.events(MARKUP[:HELD_AT], hold, MARKUP[HELD_AT:])))
    cancel = threading.Event()
    drafts = stream_script(PROMPT, persona, env=wire.env(loopback, 5.0), cancel=cancel)
    seen = []
    with pytest.raises(Cancelled, match="cancelled while"):
        for draft in drafts:
            seen.append(draft)
            if draft.sentences:
                cancel.set()
                hold.release.set()  # the next chunk comes, and the writer stops there
    assert seen[-1].script is None and "dollars" not in seen[-1].text
    assert len(seen[-1].sentences) == 1 and len(loopback.requests) == 1


# ---------------------------------------------------------------- Gemini


def test_gemini_asks_for_a_streamed_markup_script(loopback, persona):
    loopback.replies.append(Reply(events=gemini_events(MARKUP)))
    pieces = list(
        write_with_gemini(PROMPT, persona, temperature=0.6, max_tokens=400, seed=7, settings=gemini_settings(loopback))
    )
    assert len(pieces) > 10 and "".join(pieces) == MARKUP
    assert len(loopback.requests) == 1
    request = loopback.requests[0]
    assert request["path"] == "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
    assert request["headers"]["x-goog-api-key"] == "test-key"
    body = request["body"]
    system = body["systemInstruction"]["parts"][0]["text"]
    assert persona.style_prompt in system
    assert "Put stars around the 1 to 2 words you stress" in system and "[pause]" in system
    user = body["contents"][0]["parts"][0]["text"]
    assert PROMPT in user and f"about {target_words(400)} words" in user
    config = body["generationConfig"]
    assert config["temperature"] == pytest.approx(0.6)
    assert config["maxOutputTokens"] == 400 and config["seed"] == 7
    assert "responseMimeType" not in config and "responseSchema" not in config  # markup, not JSON
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
        list(write_with_gemini(PROMPT, persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback)))
    message = str(caught.value)
    assert message.startswith(f"Gemini answered {expected}")
    assert "upstream says no" in message
    assert caught.value.__cause__ is not None
    assert len(loopback.requests) == 1


def test_gemini_cut_off_before_its_first_sentence_is_retried_then_falls_back(loopback, persona):
    for _ in range(2):
        loopback.replies.append(Reply(events=gemini_events("So, the new *M4 Mac Mini* is", finish_reason="MAX_TOKENS")))
    final = run(WIRES["gemini"], loopback, persona, max_tokens=64)[-1]
    assert final.script.backend == "offline"
    assert "stopped before its first sentence was complete (raise max tokens)" in final.script.notice
    assert [r["body"]["generationConfig"]["seed"] for r in loopback.requests] == [0, 1]  # the retry's seed


def test_gemini_blocked_prompt(loopback, persona):
    loopback.replies.append(Reply(events=[{"promptFeedback": {"blockReason": "SAFETY"}}]))
    with pytest.raises(ServiceError, match="Gemini blocked the prompt .*SAFETY"):
        list(write_with_gemini(PROMPT, persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback)))


def test_gemini_stopped_for_safety_mid_answer(loopback, persona):
    loopback.replies.append(Reply(events=gemini_events("So, the new *M4 Mac Mini* is", finish_reason="SAFETY")))
    with pytest.raises(ServiceError, match=r"Gemini stopped early \(SAFETY\)"):
        list(write_with_gemini(PROMPT, persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback)))


def test_gemini_timeout(loopback, persona):
    loopback.replies.append(Reply(events=gemini_events(MARKUP), delay_s=5.0))
    settings = gemini_settings(loopback, timeout_s=0.5)
    with pytest.raises(ServiceError, match=r"Gemini timed out after 0\.5 s: "):
        list(write_with_gemini(PROMPT, persona, temperature=0.6, max_tokens=400, settings=settings))
    assert len(loopback.requests) == 1


def test_gemini_answer_in_the_segments_json_is_still_read(loopback, persona):
    loopback.replies.append(Reply(events=gemini_events(json.dumps(SCRIPT))))
    pieces = list(
        write_with_gemini(PROMPT, persona, temperature=0.6, max_tokens=400, settings=gemini_settings(loopback))
    )
    assert pieces == [to_markup(ScriptIntent(EXPECTED))]


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


def test_openai_asks_for_a_streamed_markup_script(loopback, persona):
    events = openai_events(MARKUP)
    events.insert(1, Raw(": keep-alive\n\n"))  # an SSE comment, as some servers send: skipped
    loopback.replies.append(Reply(events=events))
    settings = openai_settings(loopback, api_key="sk-local")
    pieces = list(
        write_with_openai_compatible(PROMPT, persona, temperature=0.6, max_tokens=300, seed=7, settings=settings)
    )
    assert len(pieces) > 10 and "".join(pieces) == MARKUP
    assert len(loopback.requests) == 1
    request = loopback.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-local"
    body = request["body"]
    assert body["model"] == "llama3.2" and body["stream"] is True and body["seed"] == 7
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert persona.style_prompt in body["messages"][0]["content"]
    assert "Put stars around the 1 to 2 words you stress" in body["messages"][0]["content"]
    assert (
        PROMPT in body["messages"][1]["content"]
        and f"about {target_words(300)} words" in body["messages"][1]["content"]
    )
    assert body["temperature"] == pytest.approx(0.6)
    assert body["max_tokens"] == 300
    assert "response_format" not in body  # markup, not JSON


def test_openai_server_that_does_not_stream_answers_whole_even_in_json(loopback, persona):
    fenced = "```json\n" + json.dumps(SCRIPT, indent=2) + "\n```"
    loopback.replies.append(Reply(200, chat_answer(fenced)))
    pieces = list(
        write_with_openai_compatible(
            PROMPT, persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
        )
    )
    assert pieces == [to_markup(ScriptIntent(EXPECTED))]
    assert "Authorization" not in loopback.requests[0]["headers"]


@pytest.mark.parametrize("status", [400, 429, 500])
def test_openai_http_errors_are_readable(loopback, persona, status):
    loopback.replies.append(Reply(status, {"error": {"message": f"upstream {status}"}}))
    with pytest.raises(ServiceError, match=rf"llama3\.2 at .* answered HTTP {status}: upstream {status}"):
        list(
            write_with_openai_compatible(
                PROMPT, persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
            )
        )
    assert len(loopback.requests) == 1


def test_openai_stream_that_ends_without_its_end_is_an_error(loopback, persona):
    loopback.replies.append(Reply(events=openai_events("So, the new *M4 Mac Mini* is", finish_reason=None)))
    with pytest.raises(
        ServiceError, match=r"broke in the middle of its answer \(the stream ended with no finish_reason"
    ):
        list(
            write_with_openai_compatible(
                PROMPT, persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback)
            )
        )


def test_openai_timeout(loopback, persona):
    loopback.replies.append(Reply(events=openai_events(MARKUP), delay_s=5.0))
    with pytest.raises(ServiceError, match=r"timed out after 0\.5 s: ") as caught:
        list(
            write_with_openai_compatible(
                PROMPT, persona, temperature=0.6, max_tokens=300, settings=openai_settings(loopback, 0.5)
            )
        )
    assert caught.value.__cause__ is not None


def test_openai_unreachable_server(persona):
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()  # nothing listens on the port now
    settings = OpenAISettings(base_url=f"http://127.0.0.1:{port}/v1", model="llama3.2", api_key=None, timeout_s=2)
    with pytest.raises(ServiceError, match="could not reach the LLM server .* is the server running"):
        list(write_with_openai_compatible(PROMPT, persona, temperature=0.6, max_tokens=300, settings=settings))


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


def test_answer_pieces_drop_a_code_fence_and_pass_markup_on_as_it_comes():
    pieces = ["``", "`markdown\nSo, the ", "new *M4", " Mac Mini*.\n```"]
    assert list(answer_pieces(pieces, service="Gemini")) == ["So, the ", "new *M4", " Mac Mini*.\n```"]
    assert list(answer_pieces(["  ", "Tides rise."], service="Gemini")) == ["Tides rise."]
    with pytest.raises(ServiceError, match="^Gemini answered with something other than the JSON asked for"):
        list(answer_pieces(['{"segm', 'ents": 3}'], service="Gemini"))


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
