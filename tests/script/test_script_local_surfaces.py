"""The local script model through the surfaces a user touches: the CLI (a real
subprocess), the REST API (its job events carry the script as it grows) and the
manifest, with a random-weight GGUF given by path."""

from __future__ import annotations

import json

import pytest
from api_support import isolate, wait_for
from fastapi.testclient import TestClient
from test_cli import cli

from persona_video.server import create_server

HEAT_PUMP = "How does a heat pump keep a house warm in winter?"


def test_cli_generate_writes_the_script_with_the_local_model(tmp_path, tiny_gguf):
    result = cli(
        "generate", "--persona", "mkbhd", "--prompt", HEAT_PUMP, "--script-backend", "local", "--max-tokens", "200",
        cwd=tmp_path, env={"PERSONA_VIDEO_LLM_GGUF": str(tiny_gguf)},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"script    local ({tiny_gguf.name})" in result.stdout
    assert "writing (local):" in result.stderr  # sentences shown as they are written
    folder = next((tmp_path / "outputs").glob("persona_*"))
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["state"] == "done" and manifest["stages"]["script"]["backend"] == "local"
    assert manifest["stages"]["script"]["model"] == tiny_gguf.name
    assert json.loads((folder / "script.json").read_text())["backend"] == "local"


def test_cli_asking_for_the_local_model_without_one_says_how_to_get_it(tmp_path):
    result = cli(
        "generate", "--prompt", HEAT_PUMP, "--script-backend", "local",
        cwd=tmp_path, env={"PERSONA_VIDEO_CHECKPOINTS": str(tmp_path / "empty")},
    )  # fmt: skip
    assert result.returncode == 2 and "fetch llm" in result.stderr


def test_cli_refuses_a_script_in_chinese(tmp_path):
    result = cli("generate", "--script", "黑洞是怎么形成的？", cwd=tmp_path)
    assert result.returncode == 2 and "the voices speak English" in result.stderr


@pytest.fixture
def client(tmp_path, tiny_gguf):
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, tmp_path / "outputs", PERSONA_VIDEO_LLM_GGUF=str(tiny_gguf))
        with TestClient(create_server()) as test_client:
            yield test_client


def test_api_job_events_carry_the_script_as_it_grows(client, tiny_gguf):
    answer = client.post("/api/jobs", json={"prompt": HEAT_PUMP, "persona": "ijustine", "script_backend": "local"})
    assert answer.status_code in (200, 201, 202), answer.text
    job_id = answer.json()["job_id"]
    status = wait_for(client, job_id)
    assert status["state"] == "done", status
    assert status["stages"]["script"]["backend"] == "local"
    events = []
    with client.stream("GET", f"/api/jobs/{job_id}/events") as stream:
        for line in stream.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    drafts = [e for e in events if e.get("stage") == "script_draft"]
    final = next(e for e in events if e.get("stage") == "script")
    assert len(drafts) >= 2 and all(d["script"] for d in drafts)
    assert drafts[-1]["sentences"] >= 1
    assert final["backend"] == "local" and final["model"] == tiny_gguf.name


def test_api_refuses_a_script_the_voices_cannot_say(client):
    answer = client.post("/api/jobs", json={"script": "كيف تعمل المضخة الحرارية؟", "persona": "mkbhd"})
    assert answer.status_code == 422 and "the voices speak English" in answer.text
