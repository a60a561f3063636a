"""Load on the REST API (bounded, loopback only): concurrent requests queue and
finish with distinct outputs, a full queue answers 429, and twenty jobs in a
row do not grow the server's memory beyond a stated bound."""

import hashlib
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from api_support import isolate, wait_for
from fastapi.testclient import TestClient

from persona_video.jobs.folder import Job
from persona_video.jobs.queue import JobQueue
from persona_video.server import BackgroundServer, create_server

#: Allowed growth of resident memory from job 2 to job 20, bytes.
MEMORY_GROWTH_BOUND = 150 * 1024 * 1024


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    isolate(monkeypatch, tmp_path)
    return tmp_path


def test_four_concurrent_requests_queue_and_finish_with_distinct_outputs(outputs):
    topics = ["tides", "black holes", "sourdough bread", "the M4 Mac Mini"]
    with BackgroundServer(create_server()) as url:

        def ask(topic):
            with httpx.Client(timeout=300) as http:
                answer = http.post(
                    f"{url}/api/generate/persona-video", json={"prompt": f"Explain {topic}", "max_tokens": 30}
                )
                assert answer.status_code == 200, answer.text
                body = answer.json()
                video = http.get(body["video_url"])  # absolute URL, fetched over the real socket
                assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
                return body, hashlib.sha256(video.content).hexdigest()

        started = time.perf_counter()
        with ThreadPoolExecutor(4) as pool:
            results = list(pool.map(ask, topics))
        wall_s = time.perf_counter() - started
    bodies = [body for body, _ in results]
    each = ", ".join(f"{b['processing_time']:.2f}" for b in bodies)
    print(f"\n4 concurrent requests: all answered in {wall_s:.2f} s wall; per-job processing_time {each} s")
    for topic, body in zip(topics, bodies, strict=True):
        assert topic.lower() in body["text"].lower()
    assert len({b["job_id"] for b in bodies}) == 4
    assert len({b["text"] for b in bodies}) == 4
    assert len({digest for _, digest in results}) == 4
    # One pipeline at a time: the jobs' run intervals do not overlap.
    spans = sorted((m["created"], m["finished"]) for m in (Job.open(b["job_id"]).manifest for b in bodies))
    for (_, finished), (created, _) in zip(spans, spans[1:], strict=False):
        assert created >= finished - 0.05


def test_full_queue_answers_429_with_retry_after(outputs):
    long_script = " ".join(["This sentence keeps the first job busy for a while."] * 6)
    with TestClient(create_server(queue=JobQueue(maxsize=1))) as client:
        first = client.post("/api/jobs", json={"script": long_script}).json()["job_id"]
        deadline = time.monotonic() + 30
        while client.get(f"/api/jobs/{first}").json()["state"] == "queued" and time.monotonic() < deadline:
            time.sleep(0.02)
        second = client.post("/api/jobs", json={"script": "Second."})
        assert second.status_code == 202 and second.json()["position"] == 1
        third = client.post("/api/jobs", json={"script": "Third."})
        sync = client.post("/api/generate/persona-video", json={"prompt": "Explain tides"})
        for refused in (third, sync):
            assert refused.status_code == 429
            assert refused.json()["error"]["code"] == "queue_full"
            assert "busy" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) >= 1
        assert wait_for(client, first)["state"] == "done"
        assert wait_for(client, second.json()["job_id"])["state"] == "done"
        fourth = client.post("/api/jobs", json={"script": "Fourth."})
        assert fourth.status_code == 202
        # Wait for it: leaving the client stops the server, which drops jobs still waiting.
        assert wait_for(client, fourth.json()["job_id"])["state"] == "done"
    # The refused submissions left no job folders behind.
    assert len(list(outputs.glob("persona_*"))) == 3


def resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_twenty_jobs_in_a_row_do_not_grow_memory(outputs):
    with TestClient(create_server()) as client:
        rss = {}
        for index in range(1, 21):
            body = {"script": f"Job number {index}. [pause 0.3] A *short* one.", "seed": index}
            job_id = client.post("/api/jobs", json=body).json()["job_id"]
            assert wait_for(client, job_id)["state"] == "done"
            if index in (2, 20):
                rss[index] = resident_bytes()
    growth = rss[20] - rss[2]
    print(
        f"\nRSS after job 2: {rss[2] / 2**20:.1f} MB, after job 20: {rss[20] / 2**20:.1f} MB, "
        f"growth {growth / 2**20:+.1f} MB (bound {MEMORY_GROWTH_BOUND / 2**20:.0f} MB)"
    )
    assert growth < MEMORY_GROWTH_BOUND
