"""Faults behind the REST API: a failing Gemini, missing checkpoints, a failing ffmpeg.

Gemini is reached through the real google-genai client at loopback addresses
(a closed port, a server that answers 500); ffmpeg is replaced at its
documented override, IMAGEIO_FFMPEG_EXE, by a program that fails.
"""

import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from threading import Thread

import pytest
from api_support import isolate, wait_for
from fastapi.testclient import TestClient

from persona_video.jobs.folder import Job
from persona_video.server import create_server


@pytest.fixture
def client(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path / "outputs")
    with TestClient(create_server()) as test_client:
        yield test_client


def closed_port() -> int:
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_port
    server.server_close()
    return port


class Answers500(BaseHTTPRequestHandler):
    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"error": {"code": 500, "message": "upstream broke", "status": "INTERNAL"}}).encode()
        self.send_response(500)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def gemini_500():
    server = ThreadingHTTPServer(("127.0.0.1", 0), Answers500)
    thread = Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize("where", ["closed-port", "answers-500"])
def test_gemini_failure_falls_back_to_the_offline_writer_with_a_notice(client, monkeypatch, gemini_500, where):
    base_url = f"http://127.0.0.1:{closed_port()}" if where == "closed-port" else gemini_500
    monkeypatch.setenv("GEMINI_API_KEY", "test-key")
    monkeypatch.setenv("PERSONA_VIDEO_GEMINI_BASE_URL", base_url)
    monkeypatch.setenv("PERSONA_VIDEO_GEMINI_TIMEOUT_S", "3")
    answer = client.post("/api/generate/persona-video", json={"prompt": "Explain tides", "max_tokens": 24})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "tides" in body["text"].lower()
    assert len(body["notices"]) == 1 and "used the offline writer instead" in body["notices"][0]
    if where == "answers-500":
        assert "HTTP 500" in body["notices"][0]
    status = client.get(f"/api/jobs/{body['job_id']}").json()
    assert status["stages"]["script"]["backend"] == "offline"
    assert status["backends"]["script"]["backend"] == "gemini"


def test_missing_checkpoint_auto_uses_the_default_and_says_why(client, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "no_checkpoints"))
    job_id = client.post("/api/jobs", json={"script": "Hello.", "motion_backend": "auto"}).json()["job_id"]
    status = wait_for(client, job_id)
    assert status["state"] == "done" and status["stages"]["motion"]["backend"] == "embedded"
    why = status["backends"]["motion"]["why"]
    assert why.startswith("sadtalker not used") and "no_checkpoints" in why


def test_missing_checkpoint_asked_for_by_name_is_503_naming_it(client, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "no_checkpoints"))
    for body in ({"script": "Hello.", "motion_backend": "sadtalker"}, {"script": "Hello.", "enhancer": "gfpgan"}):
        answer = client.post("/api/jobs", json=body)
        assert answer.status_code == 503, answer.text
        error = answer.json()["error"]
        assert error["code"] == "backend_unavailable" and "cannot run here" in error["message"]
    assert not list((tmp_path / "outputs").glob("persona_*"))


@pytest.fixture
def failing_ffmpeg(tmp_path, monkeypatch):
    exe = tmp_path / "ffmpeg"
    exe.write_text("#!/bin/sh\necho 'simulated encoder crash: disk quota exceeded' >&2\nexit 1\n")
    exe.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))


def test_ffmpeg_failure_marks_the_job_failed_with_the_reason(client, failing_ffmpeg):
    job_id = client.post("/api/jobs", json={"script": "Hello there."}).json()["job_id"]
    status = wait_for(client, job_id)
    assert status["state"] == "failed"
    assert status["error"]["stage"] == "video"
    assert "simulated encoder crash" in status["error"]["message"]
    manifest = Job.open(job_id).read_json("manifest.json")
    assert manifest["state"] == "failed" and manifest["error"]["stage"] == "video"
    assert "simulated encoder crash" in manifest["error"]["message"]
    assert "video" not in status["urls"]
    events = client.get(f"/api/jobs/{job_id}/events").text
    assert events.rstrip().splitlines()[-2] == "event: end" and '"state": "failed"' in events


def test_ffmpeg_failure_on_the_synchronous_endpoint_is_a_json_error(client, failing_ffmpeg):
    answer = client.post("/api/generate/persona-video", json={"prompt": "Explain tides", "max_tokens": 16})
    assert answer.status_code == 500
    error = answer.json()["error"]
    assert error["code"] == "stage_failed" and error["message"].startswith("encode stage failed: ffmpeg")
    assert "simulated encoder crash" in error["message"]
