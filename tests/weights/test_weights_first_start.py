"""A deployment's first start: the missing heavy weights download in the background while the
server answers its health check and the page shows how far they are; a licence not agreed to
holds its group back and says how to agree. The real registry entries, the real fetcher and
the real server, against a loopback server that speaks the Hub's resolve API."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from weights_support import FakeHub, Served

from persona_video.app.content import heavy_weights_status
from persona_video.server import BackgroundServer, create_server
from persona_video.weights import first_start
from persona_video.weights.catalog import HubFile
from persona_video.weights.registry import GROUPS, local_path


@pytest.fixture
def fresh(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty checkpoints folder and Hub cache, and no first-start fetch yet in this process."""
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "COQUI_TOS_AGREED", first_start.FETCH_ON_START_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setattr(first_start, "_FETCH", None)
    monkeypatch.setattr(first_start, "_HELD_BACK", {})
    return tmp_path / "checkpoints"


def _wait_for(condition, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


def test_nothing_asked_or_nothing_missing_fetches_nothing(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert first_start.fetch_on_start() is None
    assert first_start.status() == {"state": "idle", "fraction": 0.0, "message": "", "held_back": []}
    assert heavy_weights_status()[0] == ""
    # every gfpgan file present at its pinned size: nothing to fetch
    for weight in GROUPS["gfpgan"]:
        path = local_path(weight)
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.truncate(weight.size)
    monkeypatch.setenv(first_start.FETCH_ON_START_ENV, "gfpgan")
    assert first_start.fetch_on_start() is None


def test_xtts_waits_for_its_licence_to_be_agreed_to(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(first_start.FETCH_ON_START_ENV, "xtts")
    assert first_start.fetch_on_start() is None
    (line,) = first_start.held_back()
    assert "the XTTS v2 voice model is not downloaded" in line and "set COQUI_TOS_AGREED=1 to accept it" in line
    assert "Coqui Public Model License" in line
    assert "COQUI_TOS_AGREED=1" in heavy_weights_status()[0]


def test_the_server_answers_while_the_weights_download(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(first_start.FETCH_ON_START_ENV, "xtts")
    monkeypatch.setenv("COQUI_TOS_AGREED", "1")
    with FakeHub() as hub:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        for weight in GROUPS["xtts"]:
            assert isinstance(weight.source, HubFile)
            # the pinned size and hash announced; 4 MB of the model, then the server goes quiet
            served = Served(lambda start, end: bytes(end - start), size=weight.size, sha256=weight.sha256)
            served.stall_after = 4_000_000
            hub.add_hub_file(weight.source.repo_id, weight.source.revision, weight.source.filename, served)
        fetching = first_start.fetch_on_start(read_timeout_s=2.0, retries=0)
        assert fetching is not None and first_start.first_start_fetch() is fetching
        _wait_for(lambda: fetching.fraction > 0)
        with BackgroundServer(create_server()) as url:
            health = httpx.get(f"{url}/api/health", timeout=10)
            assert health.status_code == 200
            body = health.json()
            assert body["ok"] and body["weights"]["state"] == "downloading"
            assert body["weights"]["message"].startswith("downloading the XTTS v2 voice model, ")
            text, timer = heavy_weights_status()
            assert text.startswith("**First start:** downloading the XTTS v2 voice model") and timer.active
            assert fetching.wait(30)  # the stall ends the download
            failed = httpx.get(f"{url}/api/health", timeout=10).json()["weights"]
            assert failed["state"] == "failed" and "stalled" in failed["message"]
            assert heavy_weights_status()[0].startswith("**First start:** the model files could not be downloaded")
    assert not local_path(GROUPS["xtts"][0]).exists()  # nothing half-downloaded in place
