"""Shared helpers for the API tests."""

import time

import pytest


def isolate(patch: pytest.MonkeyPatch, outputs, **env: str) -> None:
    """Point the server at its own outputs folder, with no script service configured."""
    patch.setenv("PERSONA_VIDEO_OUTPUTS", str(outputs))
    patch.delenv("GEMINI_API_KEY", raising=False)
    patch.delenv("PERSONA_VIDEO_LLM_BASE_URL", raising=False)
    for name, value in env.items():
        patch.setenv(name, value)


def wait_for(client, job_id: str, timeout_s: float = 120.0, poll_s: float = 0.1) -> dict:
    """Poll GET /api/jobs/{id} until the job is done or failed; its last status."""
    deadline = time.monotonic() + timeout_s
    status: dict = {}
    while time.monotonic() < deadline:
        status = client.get(f"/api/jobs/{job_id}").json()
        if status["state"] in ("done", "failed"):
            return status
        time.sleep(poll_s)
    raise AssertionError(f"job {job_id} did not finish in {timeout_s} s: {status}")
