"""The page against a farm, in a real browser: `python app.py` with PERSONA_VIDEO_BROKER set,
Debian's redis-server and two `python -m persona_video worker` processes. The page speaks a
script; the worker that took the job is killed (SIGKILL) while the video streams; the page
keeps going while the other worker goes on from the script, and ends with a playable video.
Screenshots go to test-artifacts/."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from broker_support import RedisServer, Worker, broker_env, manifest, need_redis, wait_for_workers
from test_browser import ARTIFACTS, VIDEO_READY, browser, serve_app  # noqa: F401 (browser is a fixture)

from persona_video.bench import BENCH_SCRIPT

pytestmark = [pytest.mark.browser, pytest.mark.broker]


@pytest.fixture(scope="module")
def farm_page(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, RedisServer, list[Worker], object]]:
    need_redis()
    root = tmp_path_factory.mktemp("page_farm")
    redis = RedisServer(root / "redis").start()
    outputs = root / "outputs"
    env = broker_env(redis, outputs, GRADIO_ANALYTICS_ENABLED="False")
    workers = [Worker(env, root / f"worker{index}.log") for index in range(2)]
    try:
        # the page as a user serves it, with the broker's settings and the workers' outputs folder
        for url in serve_app(tmp_path_factory, **env):
            wait_for_workers(redis, workers)
            yield url, redis, workers, outputs
    finally:
        for worker in workers:
            worker.stop()
        redis.stop()


def test_the_page_streams_a_job_one_worker_started_and_the_other_finished(farm_page, browser) -> None:  # noqa: F811
    url, redis, workers, outputs = farm_page
    client = redis.client()
    ARTIFACTS.mkdir(exist_ok=True)
    page = browser.new_page(viewport={"width": 1400, "height": 1100})
    page.goto(url)
    page.locator("#speak").wait_for(timeout=30_000)
    page.locator("#script textarea").fill(BENCH_SCRIPT)
    page.locator("#speak").click()

    deadline = time.monotonic() + 60
    job_id, job_manifest = None, {"stages": {}}
    while True:  # the job's script is done and its video is streaming, not finished
        assert time.monotonic() < deadline, "the job never started streaming"
        job_id = job_id or next(iter(client.smembers("persona_video:active")), None)
        if job_id is not None:
            try:
                job_manifest = manifest(outputs, job_id)
            except (OSError, ValueError):
                pass
            folder = outputs / f"persona_{job_id}"
            if "script" in job_manifest["stages"] and list((folder / "stream").glob("seg_*.ts")):
                break
        time.sleep(0.01)
    victim = next(w for w in workers if w.name == job_manifest["attempts"][0]["worker"])
    survivor = next(w for w in workers if w is not victim)
    victim.kill()
    # what the first worker streamed reached the page: the live player shows it
    page.locator("#live video").wait_for(timeout=30_000)
    assert "Done" not in page.locator("#status").inner_text()  # still going, the worker gone
    page.screenshot(path=str(ARTIFACTS / "workers-01-worker-killed.png"), full_page=True)

    page.wait_for_function(VIDEO_READY, arg="", timeout=120_000)
    page.locator("#status").get_by_text("Done").wait_for(timeout=30_000)
    assert f"job {job_id}" in page.locator("#status").inner_text()
    src = page.evaluate("() => document.querySelector('#video video').currentSrc")
    response = page.request.get(src)
    assert response.status == 200 and response.headers["content-type"].startswith("video/mp4")
    assert page.locator("#stages table").count() == 1
    page.screenshot(path=str(ARTIFACTS / "workers-02-finished-elsewhere.png"), full_page=True)
    first, second = manifest(outputs, job_id)["attempts"]
    assert first["worker"] == victim.name and second["worker"] == survivor.name
    page.close()
