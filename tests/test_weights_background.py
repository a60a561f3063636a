"""What the app uses at start: the background fetch it polls, which GGUF the local writer loads, and
whether the first start fetches the script model."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from weights_support import REVISION, FakeHub, Served, hub_entry, leftovers

from persona_video.errors import BackendUnavailable
from persona_video.weights.background import local_llm_path, should_autofetch, start_background_fetch
from persona_video.weights.registry import WEIGHTS, local_path


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "PERSONA_VIDEO_LLM_GGUF", "PERSONA_VIDEO_FETCH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


def _wait_for(condition, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_background_fetch_reports_progress_then_done(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = os.urandom(400_000)
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        # Half the file, then the server goes quiet: the page sees "downloading ..., 50 %" meanwhile.
        served = hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, stall_after=200_000))
        job = start_background_fetch(entries=[hub_entry("blob", data)], read_timeout_s=1.0, retries=0)
        _wait_for(lambda: job.fraction >= 0.5)
        assert job.snapshot() == {"state": "downloading", "fraction": 0.5, "message": "downloading test, 50 %"}
        assert job.wait(10)
        assert job.state == "failed" and "stalled" in job.message and job.error.kind == "stalled"
        # Started again, it resumes from the half it has and finishes.
        served.stall_after = None
        job = start_background_fetch(entries=[hub_entry("blob", data)])
        assert job.wait(10)
        assert job.snapshot() == {"state": "done", "fraction": 1.0, "message": "test is ready"}
        assert job.results[0].path.read_bytes() == data and leftovers(root) == ["test/weights.bin"]


def test_background_fetch_offline_says_so(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    job = start_background_fetch(["llm"])
    assert job.wait(10)
    assert job.state == "offline" and "looks offline" in job.message
    assert job.message.endswith(f"put the file at {local_path(WEIGHTS['llm'])} yourself")


def _sparse(path: Path, size: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        handle.truncate(size)  # the right size without writing a gigabyte
    return path


def test_local_llm_path_order(root: Path, tmp_path: Path) -> None:
    assert local_llm_path() is None and should_autofetch()
    assert not should_autofetch({**os.environ, "PERSONA_VIDEO_FETCH": "0"})
    # Any other GGUF in checkpoints/llm/ is used when no registered one is there (partial downloads are not).
    _sparse(root / "llm" / ".qwen2.5-1.5b-instruct-q4_k_m.gguf.part", 1000)
    other = _sparse(root / "llm" / "my-model.gguf", 1000)
    assert local_llm_path() == other and not should_autofetch()
    # The small registered model beats it, the default one beats both; a wrong-sized one does not count.
    small = _sparse(local_path(WEIGHTS["llm_small"]), WEIGHTS["llm_small"].size)
    assert local_llm_path() == small
    default = _sparse(local_path(WEIGHTS["llm"]), WEIGHTS["llm"].size - 1)
    assert local_llm_path() == small
    _sparse(default, WEIGHTS["llm"].size)
    assert local_llm_path() == default
    # PERSONA_VIDEO_LLM_GGUF beats everything, and names itself when its file is not there.
    chosen = _sparse(tmp_path / "elsewhere" / "chosen.gguf", 10)
    assert local_llm_path({"PERSONA_VIDEO_LLM_GGUF": str(chosen)}) == chosen
    with pytest.raises(BackendUnavailable, match=r"PERSONA_VIDEO_LLM_GGUF=/nowhere/x.gguf does not exist"):
        local_llm_path({"PERSONA_VIDEO_LLM_GGUF": "/nowhere/x.gguf"})
    assert not should_autofetch({"PERSONA_VIDEO_LLM_GGUF": "/nowhere/x.gguf"})
