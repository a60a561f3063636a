"""Faults and load on the broker path, with real processes: Debian's redis-server (append-only
file on) and two `python -m persona_video worker --queue cpu` processes on this machine.

Twelve jobs at once all finish, none twice, with no memory growth per worker beyond the
in-process server's bound; a server killed while jobs run loses nothing (a client that
reconnects to the restarted one gets every event and the result); Redis killed and restarted
mid-run loses no queued job; a worker killed mid-job (SIGKILL) has its job finished by the
other worker, from its last finished stage, its files whole, its manifest naming both."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from broker_support import (
    ROOT,
    RedisServer,
    Worker,
    broker_env,
    free_port,
    manifest,
    need_redis,
    sse,
    wait_done,
    wait_for_workers,
)
from fastapi.testclient import TestClient
from test_api_load import MEMORY_GROWTH_BOUND

from persona_video.bench import BENCH_SCRIPT
from persona_video.encode.probe import probe
from persona_video.server import create_server

pytestmark = pytest.mark.broker

STAGES = ["script", "speech", "motion", "governor", "video", "done"]
#: About 8 s of speech: long enough to stop things mid-job, short enough for the suite.
MEDIUM = BENCH_SCRIPT.split(" Ports are")[0]


@dataclass
class Farm:
    redis: RedisServer
    workers: list[Worker]
    outputs: Path
    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def farm(tmp_path_factory):
    need_redis()
    root = tmp_path_factory.mktemp("faults")
    redis = RedisServer(root / "redis").start()
    outputs = root / "outputs"
    env = broker_env(redis, outputs, PERSONA_VIDEO_QUEUE_SIZE="12", PERSONA_VIDEO_KEEP_JOBS="100")
    workers: list[Worker] = []
    try:
        workers += [Worker(env, root / f"worker{index}.log") for index in range(2)]
        wait_for_workers(redis, workers)
        with pytest.MonkeyPatch.context() as patch:
            for name in (
                "PERSONA_VIDEO_BROKER",
                "PERSONA_VIDEO_OUTPUTS",
                "PERSONA_VIDEO_JOB_TIMEOUT_S",
                "PERSONA_VIDEO_QUEUE_SIZE",
                "PERSONA_VIDEO_KEEP_JOBS",
            ):
                patch.setenv(name, env[name])
            patch.delenv("GEMINI_API_KEY", raising=False)
            patch.delenv("PERSONA_VIDEO_LLM_BASE_URL", raising=False)
            yield Farm(redis, workers, outputs, env, root)
    finally:
        for worker in workers:
            worker.stop()
        redis.stop()


@pytest.fixture(scope="module")
def client(farm):
    with TestClient(create_server()) as test_client:
        yield test_client


def pool_rss(worker: Worker) -> int:
    """Resident bytes of the worker's pool process (where the jobs run)."""
    (child,) = worker.children()
    with open(f"/proc/{child}/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def submit_all(client, bodies: list[dict]) -> list[str]:
    answers = [client.post("/api/jobs", json=body) for body in bodies]
    assert all(a.status_code == 202 for a in answers), [a.text for a in answers if a.status_code != 202]
    return [a.json()["job_id"] for a in answers]


def assert_ran_once(farm: Farm, job_id: str) -> dict:
    """The job ran in one attempt and its event stream holds each stage once; its manifest."""
    record = farm.redis.client().hgetall(f"persona_video:job:{job_id}")
    events = farm.redis.client().xrange(f"persona_video:events:{record['task']}")
    stages = [fields.get("event", "end") for _, fields in events]
    stages = [s for s in stages if '"stage": "chunk"' not in s]  # the stream's segments aside
    assert len(stages) == len(STAGES) + 1 and stages[-1] == "end", stages
    job_manifest = manifest(farm.outputs, job_id)
    assert job_manifest["state"] == "done" and len(job_manifest["attempts"]) == 1, job_manifest["attempts"]
    return job_manifest


def test_twelve_jobs_at_once_on_two_workers_all_finish_none_twice(farm, client):
    warm = submit_all(client, [{"script": f"Warm-up number {n}.", "seed": n} for n in range(2)])
    for job_id in warm:
        assert wait_done(client, job_id)["state"] == "done"
    rss_before = {w.name: pool_rss(w) for w in farm.workers}
    started = time.perf_counter()
    bodies = [{"script": f"Job number {n}. [pause 0.3] A *short* one.", "seed": n} for n in range(12)]
    batch = submit_all(client, bodies)
    statuses = [wait_done(client, job_id) for job_id in batch]
    wall_s = time.perf_counter() - started
    assert [s["state"] for s in statuses] == ["done"] * 12
    ran_by = [assert_ran_once(farm, job_id)["attempts"][0]["worker"] for job_id in batch]
    assert set(ran_by) == {w.name for w in farm.workers}  # both took jobs
    assert len({s["text"] for s in statuses}) == 12
    videos = {hashlib.sha256((farm.outputs / f"persona_{j}" / "video.mp4").read_bytes()).hexdigest() for j in batch}
    assert len(videos) == 12
    # Eight more (twenty in all since the warm-up): no worker's pool process grows beyond the in-process bound.
    for job_id in submit_all(client, [{"script": f"More number {n}.", "seed": n} for n in range(8)]):
        assert wait_done(client, job_id)["state"] == "done"
    growth = {name: pool_rss(w) - rss_before[name] for name, w in ((w.name, w) for w in farm.workers)}
    per_worker = ", ".join(f"{g / 2**20:+.1f} MB" for g in growth.values())
    print(f"\n12 jobs at once on 2 workers: {wall_s:.2f} s wall; {ran_by.count(ran_by[0])}/12 on one worker")
    print(f"pool process memory growth over 20 jobs: {per_worker} (bound {MEMORY_GROWTH_BOUND / 2**20:.0f} MB)")
    assert all(g < MEMORY_GROWTH_BOUND for g in growth.values())


class ServerProcess:
    """`python -m persona_video.server` (page + API) on a loopback port, its log in a file."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.url = f"http://127.0.0.1:{port}"
        server_env = {**env, "GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(port)}
        server_env["GRADIO_ANALYTICS_ENABLED"] = "False"
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "persona_video.server"], cwd=ROOT, env=server_env, stdout=log, stderr=log
            )
        self.log_path = log_path
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{self.url}/api/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the server did not start:\n{log_path.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)


def test_a_server_killed_while_jobs_run_loses_nothing(farm):
    port = free_port()
    first = ServerProcess(farm.env, port, farm.root / "server.log")
    with httpx.Client(base_url=first.url, timeout=30) as http:
        jobs = [http.post("/api/jobs", json={"script": MEDIUM, "seed": n}).json()["job_id"] for n in range(3)]
        with http.stream("GET", f"/api/jobs/{jobs[0]}/events") as stream:  # a client following the first
            next(line for line in stream.iter_lines() if line.startswith("event: stage"))
            first.kill()  # while it streams and the others wait
    states = [farm.redis.client().hget(f"persona_video:job:{job_id}", "state") for job_id in jobs]
    assert "done" not in states[1:], states  # the workers go on meanwhile, with no server
    second = ServerProcess(farm.env, port, farm.root / "server.log")
    try:
        with httpx.Client(base_url=second.url, timeout=30) as http:
            for job_id in jobs:  # the client reconnects: every event from the start, then the result
                events = sse(http, f"/api/jobs/{job_id}/events")
                assert [
                    data["stage"] for kind, data in events if kind == "stage" and data["stage"] != "chunk"
                ] == STAGES
                kind, final = events[-1]
                assert kind == "end" and final["state"] == "done"
                video = http.get(final["urls"]["video"])
                assert video.status_code == 200 and video.content[4:8] == b"ftyp"
                assert_ran_once(farm, job_id)
    finally:
        second.kill()


def test_redis_killed_and_restarted_mid_run_loses_no_queued_job(farm, client):
    jobs = submit_all(client, [{"script": MEDIUM, "seed": 10 + n} for n in range(5)])
    deadline = time.monotonic() + 60
    while client.get(f"/api/jobs/{jobs[0]}").json()["state"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert farm.redis.client().llen("cpu") >= 2  # some wait in Redis when it dies
    farm.redis.kill()
    time.sleep(1.0)
    farm.redis.start()  # same port, same append-only file
    statuses = [wait_done(client, job_id) for job_id in jobs]
    assert [s["state"] for s in statuses] == ["done"] * 5
    for job_id in jobs:
        assert_ran_once(farm, job_id)
    assert "Loading AOF" in farm.redis.log() or "DB loaded from append only file" in farm.redis.log()


def test_a_worker_killed_mid_job_has_it_finished_by_the_other_from_its_last_stage(farm, client):
    job_id = client.post("/api/jobs", json={"script": BENCH_SCRIPT, "seed": 21}).json()["job_id"]
    streamed: list = []
    reader = threading.Thread(target=lambda: streamed.extend(sse(client, f"/api/jobs/{job_id}/events")))
    reader.start()
    folder = farm.outputs / f"persona_{job_id}"
    deadline = time.monotonic() + 60
    while True:  # until the script is done and the video is streaming, not finished
        try:
            job_manifest = manifest(farm.outputs, job_id)
        except (OSError, ValueError):
            job_manifest = {"stages": {}}
        if "script" in job_manifest["stages"] and list((folder / "stream").glob("seg_*.ts")):
            break
        assert time.monotonic() < deadline, "the job never started streaming"
        time.sleep(0.01)
    victim = next(w for w in farm.workers if w.name == job_manifest["attempts"][0]["worker"])
    survivor = next(w for w in farm.workers if w is not victim)
    victim.kill()
    killed_at = time.time()
    script = (folder / "script.json").read_bytes()
    script_mtime = (folder / "script.json").stat().st_mtime_ns
    assert "video" not in manifest(farm.outputs, job_id)["stages"]
    reader.join(180)
    assert [
        data["stage"] for kind, data in streamed if kind == "stage" and data["stage"] != "chunk"
    ] == STAGES  # each once, in order
    assert streamed[-1][0] == "end" and streamed[-1][1]["state"] == "done"
    job_manifest = manifest(farm.outputs, job_id)
    first, second = job_manifest["attempts"]
    assert first["worker"] == victim.name and second["worker"] == survivor.name
    # the stages after the script run sentence by sentence, all finishing at the end: it goes on from the script
    assert second["pid"] in survivor.children() and second["resumed_after"] in (
        "script",
        "speech",
        "motion",
        "governor",
    )
    # picked up again well before the visibility timeout: the lock and heartbeat lapsed, it was rescued
    print(f"\nworker killed mid-job: the other took it over {second['at'] - killed_at:.1f} s later")
    assert second["at"] - killed_at < 30
    # The finished stages were not redone, and the files are whole.
    assert (folder / "script.json").read_bytes() == script and (
        folder / "script.json"
    ).stat().st_mtime_ns == script_mtime
    info = probe(folder / "video.mp4")
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert info["num_frames"] == json.loads((folder / "timing.json").read_text())["num_frames"]
    assert not [p.name for p in folder.iterdir() if p.name.startswith(".")]  # no half-written file left
    assert job_manifest["state"] == "done" and set(job_manifest["stages"]) == set(STAGES[:-1])
