"""doctor per deployment kind: what a CPU machine, a GPU machine (or the Docker image) and a
ZeroGPU Space need, what is missing here, and the one command that fixes each."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from persona_video.cli import main
from persona_video.weights.deployments import SADTALKER_COMMIT, deployment_report, format_deployments
from persona_video.weights.registry import GROUPS, local_path

DOCKERFILE = Path(__file__).resolve().parents[2] / "Dockerfile"


@pytest.fixture
def empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("HF_ENDPOINT", "HF_HOME", "PERSONA_VIDEO_SADTALKER_DIR", "PERSONA_VIDEO_SADTALKER_PYTHON"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


def _needs(kind: str, **env: str) -> dict:
    deployment = next(d for d in deployment_report(env=env) if d.kind == kind)
    return {need.what: need for need in deployment.needs}


def test_each_kind_names_what_is_missing_and_the_command_that_fixes_it(empty: Path) -> None:
    kinds = [d.kind for d in deployment_report(env={})]
    assert kinds == ["cpu", "gpu", "zerogpu"]
    cpu = _needs("cpu")
    assert cpu["core packages"].ready
    assert not cpu["script model"].ready and cpu["script model"].fix == "python -m persona_video fetch llm"
    gpu = _needs("gpu")
    assert gpu["XTTS v2 weights"].fix == "COQUI_TOS_AGREED=1 python -m persona_video fetch xtts"
    assert "model.pth" in gpu["XTTS v2 weights"].detail and "missing" in gpu["XTTS v2 weights"].detail
    assert gpu["SadTalker weights"].fix == "python -m persona_video fetch sadtalker"
    assert gpu["GFPGAN weights"].fix == "python -m persona_video fetch gfpgan"
    checkout = gpu["SadTalker checkout"]
    assert not checkout.ready and "PERSONA_VIDEO_SADTALKER_DIR is not set" in checkout.detail
    assert f"checkout {SADTALKER_COMMIT}" in checkout.fix
    zerogpu = _needs("zerogpu")
    assert "requirements-gpu.txt" in zerogpu["GPU packages (torch, coqui-tts, spandrel)"].fix
    assert not zerogpu["GFPGAN weights (fetched at start)"].ready
    assert not any("SadTalker" in what for what in zerogpu)  # it cannot run there; the note says why


def test_present_weights_and_a_checkout_count_as_ready(empty: Path, tmp_path: Path) -> None:
    for group in ("llm", "gfpgan", "sadtalker"):
        for weight in GROUPS[group]:
            path = local_path(weight)
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                f.truncate(weight.size)  # the pinned size: present, not yet verified
    checkout = tmp_path / "SadTalker"
    checkout.mkdir()
    (checkout / "inference.py").write_text("")
    cpu = _needs("cpu")
    assert cpu["script model"].ready and "not yet verified" in cpu["script model"].detail
    gpu = _needs("gpu", PERSONA_VIDEO_SADTALKER_DIR=str(checkout))
    assert gpu["SadTalker weights"].ready and gpu["GFPGAN weights"].ready
    assert gpu["SadTalker checkout"].ready
    environment = gpu["SadTalker's environment"]
    assert not environment.ready and "requirements-sadtalker.txt" in environment.fix


def test_the_docker_image_builds_the_commit_doctor_names() -> None:
    match = re.search(r"^ARG SADTALKER_COMMIT=([0-9a-f]{40})$", DOCKERFILE.read_text(encoding="utf-8"), re.M)
    assert match and match.group(1) == SADTALKER_COMMIT


def test_cli_doctor_ends_with_the_deployments(empty: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    section = out[out.index("deployments (") :]
    assert "cpu      not ready" in section and "gpu      not ready" in section and "zerogpu  " in section
    assert "fix: COQUI_TOS_AGREED=1 python -m persona_video fetch xtts" in section
    assert format_deployments(deployment_report()) in out
