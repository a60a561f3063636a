"""The weights fetcher against a loopback server that speaks the Hub's resolve API (HF_ENDPOINT points at
it) and serves release URLs: real huggingface_hub and httpx clients, real files, real sockets."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from pathlib import Path

import pytest
from weights_support import REVISION, FakeHub, Served, hub_entry, leftovers, url_entry

from persona_video.errors import FetchError, InputError
from persona_video.weights.catalog import HubFile
from persona_video.weights.fetch import fetch
from persona_video.weights.registry import WEIGHTS, resolve_names, weight_state


@pytest.fixture
def root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty checkpoints folder and an empty Hugging Face cache, nothing from this machine's environment."""
    for name in ("HF_ENDPOINT", "HF_TOKEN", "HF_HOME", "COQUI_TOS_AGREED", "PERSONA_VIDEO_LLM_GGUF"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tmp_path / "checkpoints"))
    return tmp_path / "checkpoints"


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        yield server


def test_hub_file_downloads_verified_and_renamed_into_place(root: Path, hub: FakeHub) -> None:
    data = os.urandom(3 * 2**20 + 17)
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data))
    weight = hub_entry("blob", data)
    seen = []
    [result] = fetch(entries=[weight], progress=seen.append, env={**os.environ, "HF_TOKEN": "hf_secret"})
    assert result.action == "downloaded" and result.path == root / "test" / "weights.bin"
    assert result.path.read_bytes() == data and result.sha256 == hashlib.sha256(data).hexdigest()
    assert leftovers(root) == ["test/weights.bin"]
    # Progress went from 0 to all of it, then the file was hashed.
    downloading = [p for p in seen if p.phase == "downloading"]
    assert downloading[-1].done == downloading[-1].total == len(data) and downloading[-1].fraction == 1.0
    assert seen[-1].phase == "verifying" and seen[-1].file_done == len(data)
    # The Hub's API was asked with the token; the storage it redirects to got the bytes request without it.
    head = next(r for r in hub.requests if r.method == "HEAD")
    assert head.path == f"/acme/model/resolve/{REVISION}/weights.bin"
    assert head.headers["authorization"] == "Bearer hf_secret"
    [get] = hub.gets("/storage/")
    assert "authorization" not in get.headers
    assert weight_state(weight).state == "verified"
    # A second fetch finds it checked and asks nothing of the network.
    count = len(hub.requests)
    assert fetch(entries=[weight])[0].action == "present" and len(hub.requests) == count


def test_small_git_file_without_lfs_redirect(root: Path, hub: FakeHub) -> None:
    data = b'{"model_args": {"gpt_layers": 30}}\n'
    hub.add_hub_file("acme/model", REVISION, "config.json", Served(data, lfs=False))
    [result] = fetch(entries=[hub_entry("config", data, "config.json")])
    assert result.path.read_bytes() == data
    assert [r.path for r in hub.gets("")] == [f"/acme/model/resolve/{REVISION}/config.json"]


def test_a_cut_download_resumes_on_the_next_call_with_a_range(root: Path, hub: FakeHub) -> None:
    data = os.urandom(2_000_000)
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, cut_after=700_000))
    weight = hub_entry("blob", data)
    with pytest.raises(FetchError, match=r"was cut .*700,000 of 2,000,000 bytes are kept.*again to resume") as cut:
        fetch(entries=[weight], retries=0)
    assert cut.value.kind == "interrupted"
    # Nothing under the final name; the partial file holds what arrived.
    assert leftovers(root) == ["test/.weights.bin.part"]
    assert (root / "test" / ".weights.bin.part").read_bytes() == data[:700_000]
    [result] = fetch(entries=[weight], retries=0)
    assert result.path.read_bytes() == data and leftovers(root) == ["test/weights.bin"]
    first, second = hub.gets("/storage/")
    assert "range" not in first.headers and second.headers["range"] == "bytes=700000-"


def test_one_call_retries_a_cut_by_itself(root: Path, hub: FakeHub) -> None:
    data = os.urandom(1_500_000)
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, cut_after=400_000))
    [result] = fetch(entries=[hub_entry("blob", data)], retries=1, retry_wait_s=0.05)
    assert result.path.read_bytes() == data
    assert [r.headers.get("range") for r in hub.gets("/storage/")] == [None, "bytes=400000-"]


@pytest.mark.parametrize("status", [401, 403])
def test_refused_access_says_to_set_hf_token(root: Path, hub: FakeHub, status: int) -> None:
    data = b"x" * 1000
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, status=status))
    with pytest.raises(FetchError, match=rf"refused blob \(HTTP {status}\).*set HF_TOKEN") as refused:
        fetch(entries=[hub_entry("blob", data)])
    assert refused.value.kind == "auth" and leftovers(root) == []


def test_missing_file_is_a_404_with_the_url(root: Path, hub: FakeHub) -> None:
    with pytest.raises(FetchError, match=rf"/acme/model/resolve/{REVISION}/weights.bin was not found \(HTTP 404\)"):
        fetch(entries=[hub_entry("blob", b"never served")])
    assert leftovers(root) == []


def test_a_stalled_download_times_out_and_keeps_what_arrived(root: Path, hub: FakeHub) -> None:
    data = os.urandom(500_000)
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, stall_after=100_000))
    started = time.monotonic()
    with pytest.raises(FetchError, match=r"stalled \(no data for 0.5 s\): 100,000 of 500,000 bytes are kept") as stall:
        fetch(entries=[hub_entry("blob", data)], read_timeout_s=0.5, retries=0)
    assert stall.value.kind == "stalled" and time.monotonic() - started < 5
    assert leftovers(root) == ["test/.weights.bin.part"]


def test_wrong_bytes_of_the_right_size_are_refused_and_deleted(root: Path, hub: FakeHub) -> None:
    data = os.urandom(1_000_000)
    wrong = os.urandom(len(data))
    # The server even announces the pinned SHA-256: only our own hash of the bytes can tell.
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(wrong, sha256=hashlib.sha256(data).hexdigest()))
    with pytest.raises(FetchError, match=r"SHA-256 .* the file was refused and deleted") as refused:
        fetch(entries=[hub_entry("blob", data)])
    assert refused.value.kind == "mismatch" and leftovers(root) == []


def test_announced_size_or_hash_that_differs_from_the_pin_is_refused_before_any_byte(root: Path, hub: FakeHub) -> None:
    data = os.urandom(10_000)
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, size=20_000))
    with pytest.raises(FetchError, match=r"is 20,000 bytes, the pin says 10,000: refused before downloading"):
        fetch(entries=[hub_entry("blob", data)])
    hub.add_hub_file("acme/model", REVISION, "other.bin", Served(data, sha256="ab" * 32))
    with pytest.raises(FetchError, match=r"has SHA-256 (ab){32}, the pin says"):
        fetch(entries=[hub_entry("other", data, "other.bin")])
    assert hub.gets("") == [] and leftovers(root) == []


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_offline_fails_at_once_with_the_fix(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    port = _closed_port()
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    for weight in (hub_entry("blob", b"abc"), url_entry("asset", b"abc", f"http://127.0.0.1:{port}/asset.bin")):
        started = time.monotonic()
        with pytest.raises(FetchError, match=r"this machine looks offline.*run `python -m persona_video fetch test`"):
            fetch(entries=[weight])
        assert time.monotonic() - started < 2
    assert leftovers(root) == []


def test_release_url_follows_its_redirect_resumes_and_verifies(root: Path, hub: FakeHub) -> None:
    data = os.urandom(1_200_000)
    hub.add_url("/objects/asset-1", Served(data, cut_after=300_000))
    hub.redirects["/releases/download/v1/asset.bin"] = f"{hub.url}/objects/asset-1"
    weight = url_entry("asset", data, f"{hub.url}/releases/download/v1/asset.bin")
    with pytest.raises(FetchError, match="was cut"):
        fetch(entries=[weight], retries=0)
    [result] = fetch(entries=[weight], retries=0)
    assert result.path.read_bytes() == data and leftovers(root) == ["test/release.bin"]
    assert [r.headers.get("range") for r in hub.gets("/objects/")] == [None, "bytes=300000-"]
    missing = url_entry("gone", data, f"{hub.url}/releases/download/v1/gone.bin", "gone.bin")
    with pytest.raises(FetchError, match=r"gone.bin was not found \(HTTP 404\)"):
        fetch(entries=[missing])
    wrong = url_entry("wrong", os.urandom(len(data)), f"{hub.url}/objects/asset-1", "wrong.bin")
    with pytest.raises(FetchError, match="refused and deleted"):
        fetch(entries=[wrong])
    assert leftovers(root) == ["test/release.bin"]


def test_free_disk_is_checked_before_anything_is_fetched(root: Path, hub: FakeHub) -> None:
    huge = hub_entry("huge", b"", size=10**18)
    with pytest.raises(
        FetchError, match=r"need 1000000000.0 GB in .*only .* is free.*PERSONA_VIDEO_CHECKPOINTS"
    ) as full:
        fetch(entries=[huge])
    assert full.value.kind == "disk_full" and hub.requests == []


def test_a_licence_that_asks_for_agreement_is_asked_first(root: Path, hub: FakeHub) -> None:
    data = b"coqui weights"
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data))
    weight = hub_entry("xtts_like", data, agreement_env="COQUI_TOS_AGREED", licence_url="https://example.org/cpml")
    with pytest.raises(FetchError, match=r"asks for explicit agreement.*`COQUI_TOS_AGREED=1 python -m persona_video"):
        fetch(entries=[weight])
    assert hub.requests == []
    assert fetch(entries=[weight], env={**os.environ, "COQUI_TOS_AGREED": "1"})[0].action == "downloaded"


def test_present_files_are_verified_in_place_and_the_hub_cache_counts(root: Path, tmp_path: Path, hub: FakeHub) -> None:
    data = os.urandom(50_000)
    # A copy put there by hand: right size, never hashed -> unverified until fetch checks it, without downloading.
    weight = hub_entry("blob", data)
    (root / "test").mkdir(parents=True)
    (root / "test" / "weights.bin").write_bytes(data)
    assert weight_state(weight).state == "unverified"
    assert fetch(entries=[weight])[0].action == "verified" and weight_state(weight).state == "verified"
    # A Space's preload_from_hub puts the file in the Hub cache at the pinned revision: found there.
    cached = hub_entry("cached", data, "cached.bin")
    snapshot = tmp_path / "hf-cache" / "models--acme--model" / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    (snapshot / "cached.bin").write_bytes(data)
    [result] = fetch(entries=[cached])
    assert result.action == "hub cache" and result.path == snapshot / "cached.bin"
    assert weight_state(cached).state == "verified" and not (root / "test" / "cached.bin").exists()
    assert hub.requests == []


def test_an_entry_without_a_published_sha256_records_the_one_it_downloaded(root: Path, hub: FakeHub) -> None:
    data = os.urandom(20_000)
    hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data))
    weight = hub_entry("unpinned", data, sha256=None)
    [result] = fetch(entries=[weight])
    state = weight_state(weight)
    assert state.state == "unverified" and result.sha256 in state.detail and state.fix == ""


def test_real_llm_pins_refuse_other_bytes_and_leave_nothing(root: Path, hub: FakeHub) -> None:
    """`fetch llm` with the registry's real pins: the server announces the real size and SHA-256 and then
    streams 1.1 GB of zeros (lazily); the first chunk is refused, nothing stays on disk."""
    llm = WEIGHTS["llm"]
    source = llm.source
    assert isinstance(source, HubFile) and source.revision == "91cad51170dc346986eccefdc2dd33a9da36ead9"
    zeros = Served(lambda start, end: bytes(end - start), size=llm.size, sha256=llm.sha256)
    hub.add_hub_file(source.repo_id, source.revision, source.filename, zeros)
    with pytest.raises(FetchError, match=r"do not start like a .gguf file: refused") as refused:
        fetch(["llm"])
    assert refused.value.kind == "mismatch" and leftovers(root) == []
    # A body shorter than the pinned size is refused from its headers.
    zeros.body_length = 65_536
    with pytest.raises(FetchError, match=r"serves llm as 65,536 bytes, the pin says 1,117,320,736"):
        fetch(["llm"])
    assert leftovers(root) == []
    head = next(r for r in hub.requests if r.method == "HEAD")
    assert head.path == f"/Qwen/Qwen2.5-1.5B-Instruct-GGUF/resolve/{source.revision}/{source.filename}"


def test_names_resolve_to_groups_and_entries() -> None:
    assert [w.name for w in resolve_names(["llm"])] == ["llm"]
    assert [w.name for w in resolve_names(["xtts", "xtts_model"])] == [
        "xtts_model",
        "xtts_config",
        "xtts_vocab",
        "xtts_speakers",
    ]
    assert len(resolve_names(["all"])) == len(WEIGHTS)
    with pytest.raises(InputError, match=r"unknown weights name 'lmm': use a group \(llm, llm-small, xtts"):
        resolve_names(["lmm"])


def test_two_fetches_of_one_file_at_once_download_it_once(root: Path, hub: FakeHub) -> None:
    data = os.urandom(2_000_000)
    served = hub.add_hub_file("acme/model", REVISION, "weights.bin", Served(data, stall_after=1_000_000))
    weight = hub_entry("blob", data)
    results = []
    threads = [threading.Thread(target=lambda: results.append(fetch(entries=[weight])[0])) for _ in range(2)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not hub.gets("/storage/") and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the second fetch is waiting for the first one's lock by now
    # Release the first download: its connection ends, it resumes and finishes; the second then finds it done.
    served.stall_after = None
    hub.stop.set()
    for thread in threads:
        thread.join(20)
    assert sorted(r.action for r in results) == ["downloaded", "present"]
    assert results[0].path.read_bytes() == data
    assert [r.headers.get("range") for r in hub.gets("/storage/")] == [None, "bytes=1000000-"]
