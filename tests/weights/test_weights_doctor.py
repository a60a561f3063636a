"""doctor's weights table and the fetch command line: what a user reads and the exit status they get."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from weights_support import REVISION, FakeHub, Served, hub_entry, leftovers

from persona_video.cli import main
from persona_video.weights import registry
from persona_video.weights.doctor import format_weights
from persona_video.weights.registry import WEIGHTS, record_checked, weight_state, weights_report


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "COQUI_TOS_AGREED"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


def test_every_entry_is_listed_missing_with_the_command_that_fetches_it(root: Path) -> None:
    text = format_weights(weights_report())
    lines = text.splitlines()
    assert len(lines) == len(WEIGHTS) + 1
    by_name = {line.split()[1]: line for line in lines[1:]}
    assert set(by_name) == set(WEIGHTS)
    assert "missing" in by_name["llm"] and by_name["llm"].endswith("fix: python -m persona_video fetch llm")
    assert str(root / "llm" / "qwen2.5-1.5b-instruct-q4_k_m.gguf") in by_name["llm"]
    assert "1.1 GB" in by_name["llm"] and "Hugging Face cache" in by_name["llm"]
    assert by_name["gfpgan"].endswith("fix: python -m persona_video fetch gfpgan")


def test_states_read_verified_unverified_wrong_size(root: Path) -> None:
    data = b"weights" * 100
    verified, unverified, short, unpinned = (
        hub_entry("verified", data, "a.bin"),
        hub_entry("unverified", data, "b.bin"),
        hub_entry("short", data, "c.bin"),
        hub_entry("unpinned", data, "d.bin", sha256=None),
    )
    (root / "test").mkdir(parents=True)
    for name in ("a.bin", "b.bin", "d.bin"):
        (root / "test" / name).write_bytes(data)
    (root / "test" / "c.bin").write_bytes(data[:10])
    record_checked(verified, root / "test" / "a.bin", verified.sha256)
    text = format_weights([weight_state(w) for w in (verified, unverified, short, unpinned)])
    lines = text.splitlines()[1:]
    assert "present, verified" in lines[0] and "fix:" not in lines[0]
    assert "present, unverified" in lines[1] and "SHA-256 not checked yet" in lines[1]
    assert lines[1].endswith("fix: python -m persona_video fetch test")
    assert "present, wrong size" in lines[2] and "10 bytes, expected 700" in lines[2]
    assert "present, unverified" in lines[3] and "no public SHA-256" in lines[3]
    # A changed file loses its verification.
    (root / "test" / "a.bin").write_bytes(data[::-1])
    assert weight_state(verified).state == "unverified"


def test_cli_doctor_lists_backends_then_weights(root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["doctor"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints folder:" in out and "weights (`python -m persona_video fetch NAME...`" in out
    assert "fix: python -m persona_video fetch sadtalker" in out


def test_cli_fetch_errors_exit_2(root: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["fetch", "nope"]) == 2
    assert "error: unknown weights name 'nope'" in capsys.readouterr().err
    assert main(["fetch", "xtts"]) == 2
    assert "error: xtts_model is under the Coqui Public Model License" in capsys.readouterr().err


def test_cli_fetch_shows_progress_and_the_result(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    data = os.urandom(3_000_000)
    weight = hub_entry("blob", data)
    monkeypatch.setitem(registry.GROUPS, "test", (weight,))
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data))
        assert main(["fetch", "test"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == ["blob", "downloaded", str(root / "test" / "weights.bin")]
    assert "fetching blob [" in captured.err and "100.0 % (3.0 of 3.0 MB, all 100.0 %)" in captured.err
    assert "checking blob [##############################] 100.0 %" in captured.err


def test_cli_fetch_llm_stall_keeps_the_partial_file_and_exits_2(
    root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    llm = WEIGHTS["llm"]
    source = llm.source
    header = b"GGUF" + bytes(300_000)
    served = Served(lambda start, end: header[start:end], size=llm.size, sha256=llm.sha256, stall_after=len(header))
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        hub.add_hub_file(source.repo_id, source.revision, source.filename, served)
        assert main(["fetch", "llm", "--timeout", "0.5", "--retries", "0"]) == 2
    err = capsys.readouterr().err
    assert "fetching llm [" in err
    assert "error: downloading llm from 127.0.0.1" in err and "stalled (no data for 0.5 s)" in err
    assert leftovers(root) == ["llm/.qwen2.5-1.5b-instruct-q4_k_m.gguf.part"]
    assert weight_state(llm).state == "missing"
