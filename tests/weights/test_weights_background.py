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


def test_the_page_shows_the_script_model_download_then_who_writes(
    root: Path, monkeypatch: pytest.MonkeyPatch, tiny_gguf: Path
) -> None:
    """The line above the prompt: the download's progress while it runs (scripts are
    templates meanwhile), then the writer auto picks once the model is in place."""
    from persona_video.app import session as ui_session
    from persona_video.weights import background

    monkeypatch.setenv("OLLAMA_HOST", "127.0.0.1:9")  # no Ollama here
    data = tiny_gguf.read_bytes()
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        served = hub.add_hub_file("acme/model", REVISION, "tiny.gguf", Served(data, stall_after=len(data) // 2))
        entry = hub_entry("tiny-llm", data, filename="tiny.gguf")
        job = start_background_fetch(entries=[entry], read_timeout_s=3.0, retries=0)
        monkeypatch.setattr(background, "_SCRIPT_MODEL_FETCH", job)
        _wait_for(lambda: job.fraction >= 0.4)
        text, timer = ui_session.script_writer_status()
        assert "%" in text and "templates" in text and timer.active
        assert job.wait(10) and job.state == "failed"
        text, timer = ui_session.script_writer_status()
        assert "could not be downloaded" in text and "fetch llm" in text and not timer.active
        served.stall_after = None
        job = start_background_fetch(entries=[entry])
        monkeypatch.setattr(background, "_SCRIPT_MODEL_FETCH", job)
        assert job.wait(10) and job.state == "done"
    monkeypatch.setenv("PERSONA_VIDEO_LLM_GGUF", str(job.results[0].path))
    text, timer = ui_session.script_writer_status()
    assert "**local**" in text and "tiny.gguf" in text and not timer.active


def test_no_autofetch_when_turned_off(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from persona_video.weights import background

    monkeypatch.setattr(background, "_SCRIPT_MODEL_FETCH", None)
    monkeypatch.setenv("PERSONA_VIDEO_FETCH", "0")
    assert background.autofetch_script_model() is None and background.script_model_fetch() is None
