"""Weights registry, backend status and doctor (the backends part): these run in the core environment too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from persona_video.errors import BackendUnavailable
from persona_video.weights import registry as checkpoints
from persona_video.weights.doctor import doctor_report, format_doctor
from persona_video.weights.registry import checkpoints_dir, require_weights, weight_path
from persona_video.weights.runtime import backend_status


@pytest.fixture(autouse=True)
def empty_hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry also looks in the Hugging Face cache: keep this machine's out of these tests."""
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))


def test_registry_paths_follow_the_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(checkpoints.CHECKPOINTS_ENV, raising=False)
    assert checkpoints_dir() == Path(checkpoints.__file__).resolve().parents[2] / "checkpoints"
    monkeypatch.setenv(checkpoints.CHECKPOINTS_ENV, str(tmp_path))
    assert weight_path("xtts_model") == tmp_path / "xtts_v2" / "model.pth"
    assert weight_path("gfpgan") == tmp_path / "gfpgan" / "GFPGANv1.4.pth"
    assert weight_path("sadtalker_256") == tmp_path / "sadtalker" / "SadTalker_V0.0.2_256.safetensors"
    with pytest.raises(KeyError, match="known names"):
        weight_path("nope")


def test_missing_weights_are_named_with_full_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkpoints.CHECKPOINTS_ENV, str(tmp_path))
    monkeypatch.delenv(checkpoints.SADTALKER_DIR_ENV, raising=False)
    with pytest.raises(BackendUnavailable, match=str(tmp_path / "gfpgan" / "GFPGANv1.4.pth")):
        require_weights("gfpgan")
    status = backend_status()
    assert set(status) == {"xtts", "sadtalker", "gfpgan"}
    assert not any(s.available for s in status.values())
    assert str(tmp_path / "xtts_v2" / "speakers_xtts.pth") in status["xtts"].reason
    assert checkpoints.SADTALKER_DIR_ENV in status["sadtalker"].reason
    # The files present: only what is still missing is named.
    (tmp_path / "gfpgan").mkdir()
    (tmp_path / "gfpgan" / "GFPGANv1.4.pth").write_bytes(b"x")
    assert "GFPGANv1.4.pth" not in backend_status()["gfpgan"].reason


def test_doctor_lists_every_backend_with_a_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(checkpoints.CHECKPOINTS_ENV, str(tmp_path))
    report = doctor_report(env={"GEMINI_API_KEY": "k", "OLLAMA_HOST": "127.0.0.1:9"})
    backends = [(r["stage"], r["backend"]) for r in report]
    assert ("script", "gemini") in backends and ("speech", "xtts") in backends and ("enhance", "gfpgan") in backends
    by_name = {r["backend"]: r for r in report}
    assert by_name["gemini"]["available"] and by_name["piper"]["available"] and by_name["hibari"]["available"]
    assert not by_name["openai"]["available"] and "PERSONA_VIDEO_LLM_BASE_URL" in by_name["openai"]["reason"]
    assert not by_name["local"]["available"] and "fetch llm" in by_name["local"]["reason"]
    assert not by_name["ollama"]["available"] and "ollama pull" in by_name["ollama"]["reason"]
    assert by_name["offline"]["available"]
    assert not by_name["xtts"]["available"]
    text = format_doctor(report)
    assert len(text.splitlines()) == len(report) + 1
    assert str(tmp_path / "xtts_v2" / "model.pth") in text


def test_core_modules_do_not_import_torch() -> None:
    """The core install has no torch: importing the registry, doctor and SadTalker handoff must not load it."""
    import subprocess

    code = (
        "import sys, persona_video.weights.registry, persona_video.weights.fetch, persona_video.weights.doctor, "
        "persona_video.weights.sadtalker_runner, persona_video.motion.sadtalker, "
        "persona_video.render.sadtalker; print('torch' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
