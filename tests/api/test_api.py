"""The REST API on the real pipeline: the seed's synchronous endpoint, jobs,
server-sent events, re-render, personas, files, OpenAPI and retention."""

import json
import threading

import numpy as np
import pytest
from api_support import isolate, wait_for
from fastapi.testclient import TestClient

from persona_video.encode.probe import probe
from persona_video.jobs.folder import Job
from persona_video.pipeline import Request, run
from persona_video.server import create_server

SHORT = "So, [pause 0.3] this is *seriously* fast."


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("api_outputs")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root, PERSONA_VIDEO_KEEP_JOBS="50")
        yield root


@pytest.fixture(scope="module")
def client(outputs):
    with TestClient(create_server()) as test_client:
        yield test_client


def sse_events(client, url):
    events = []
    with client.stream("GET", url) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in stream.iter_lines():
            if line.startswith("event: "):
                kind = line.removeprefix("event: ")
            elif line.startswith("data: "):
                events.append((kind, json.loads(line.removeprefix("data: "))))
    return events


def local(url):
    """The path of an absolute URL the test client serves (its base is http://testserver)."""
    assert url.startswith("http://testserver/api/jobs/"), url
    return url.removeprefix("http://testserver")


def test_personas_lists_the_shipped_presets(client):
    answer = client.get("/api/personas")
    assert answer.status_code == 200
    by_id = {p["id"]: p for p in answer.json()}
    assert {"mkbhd", "ijustine"} <= set(by_id)
    assert by_id["mkbhd"]["temperature"] == 0.6 and by_id["ijustine"]["temperature"] == 0.8
    assert by_id["mkbhd"]["governor"]["pause_gain"] == pytest.approx(0.7)


def test_synchronous_endpoint_returns_fetchable_absolute_urls(client):
    answer = client.post(
        "/api/generate/persona-video", json={"prompt": "Explain the M4 Mac Mini", "persona": "mkbhd", "max_tokens": 40}
    )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert "M4 Mac Mini" in body["text"] and body["processing_time"] > 0
    video = client.get(local(body["video_url"]))
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    audio = client.get(local(body["audio_url"]))
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    job = Job.open(body["job_id"])
    assert job.path("video.mp4").read_bytes() == video.content
    assert probe(job.path("video.mp4"))["video_codec"] == "h264"


def test_job_streams_stage_events_and_reports_its_result(client):
    accepted = client.post("/api/jobs", json={"script": SHORT, "persona": "ijustine", "seed": 3})
    assert accepted.status_code == 202
    job_id = accepted.json()["job_id"]
    assert accepted.json()["state"] in ("queued", "running")
    events = sse_events(client, f"/api/jobs/{job_id}/events")
    chunks = [data for kind, data in events if kind == "stage" and data["stage"] == "chunk"]
    events = [(kind, data) for kind, data in events if data.get("stage") != "chunk"]
    stages = [data["stage"] for kind, data in events if kind == "stage"]
    assert stages == ["script", "speech", "motion", "governor", "video", "done"]
    assert events[0][1]["script"] == SHORT and events[1][1]["voice"] == "heart"
    # one event per finished segment of the stream: index, time span, URL
    assert [c["index"] for c in chunks] == list(range(len(chunks))) and len(chunks) >= 2
    assert chunks[0]["start_s"] == 0.0 and chunks[0]["end_s"] == pytest.approx(1.0)
    assert chunks[0]["playlist"] == f"/api/jobs/{job_id}/stream.m3u8"
    segment = client.get(chunks[0]["url"])
    assert segment.status_code == 200 and segment.headers["content-type"] == "video/mp2t"
    assert segment.content[0] == 0x47  # an MPEG-TS packet
    playlist = client.get(f"/api/jobs/{job_id}/stream.m3u8")
    assert playlist.status_code == 200 and playlist.headers["content-type"].startswith("application/vnd.apple.mpegurl")
    lines = playlist.text.splitlines()
    assert lines[0] == "#EXTM3U" and "#EXT-X-ENDLIST" in lines
    assert [line for line in lines if line.endswith(".ts")] == [
        c["url"].rsplit("/", 2)[-2] + "/" + c["url"].rsplit("/", 1)[-1] for c in chunks
    ]
    assert accepted.json()["stream_url"].endswith(f"/api/jobs/{job_id}/stream.m3u8")
    kind, final = events[-1]
    assert kind == "end" and final["state"] == "done"
    status = client.get(f"/api/jobs/{job_id}").json()
    assert status["state"] == "done" and status["text"] == "So, this is seriously fast."
    assert set(status["stages"]) == {"script", "speech", "motion", "governor", "video"}
    assert all(info["seconds"] >= 0 and info["backend"] for info in status["stages"].values())
    assert status["backends"]["motion"]["backend"] == "embedded"
    captions = client.get(local(status["urls"]["captions"]))
    assert captions.status_code == 200 and captions.text.startswith("WEBVTT")
    # A late subscriber replays the whole history, then the end.
    again = sse_events(client, f"/api/jobs/{job_id}/events")
    assert [d["stage"] for k, d in again if k == "stage" and d["stage"] != "chunk"] == stages


def test_events_follow_a_job_run_outside_the_queue(client, outputs):
    """The page runs the pipeline itself; its jobs' events still stream from their manifests."""
    events = run(Request(persona="mkbhd", script=SHORT, seed=5))
    first = next(events)  # the job folder exists and is running
    streamed = []
    reader = threading.Thread(target=lambda: streamed.extend(sse_events(client, f"/api/jobs/{first.job_id}/events")))
    reader.start()
    rest = [event.stage for event in events if event.stage != "chunk"]
    reader.join(60)
    assert rest == ["speech", "motion", "governor", "video", "done"]
    assert [d["stage"] for k, d in streamed if k == "stage"] == ["script", "speech", "motion", "governor", "video"]
    assert streamed[-1][0] == "end" and streamed[-1][1]["state"] == "done"


def test_stream_of_an_unknown_job_or_segment_says_what_to_do(client):
    job_id = client.post("/api/jobs", json={"script": SHORT, "seed": 1}).json()["job_id"]
    wait_for(client, job_id)
    for path, words in (
        (f"/api/jobs/{job_id}/stream/manifest.json", "segments are named"),
        (f"/api/jobs/{job_id}/stream/seg_00999.ts", "read its playlist"),
        (f"/api/jobs/{'0' * 32}/stream.m3u8", "no job"),
    ):
        answer = client.get(path)
        assert answer.status_code == 404, (path, answer.text)
        assert words in answer.text, (path, answer.text)


def test_rerender_replaces_the_video_and_keeps_the_audio(client):
    job_id = client.post("/api/jobs", json={"script": SHORT, "seed": 1}).json()["job_id"]
    wait_for(client, job_id)
    job = Job.open(job_id)
    audio_before = job.path("audio.wav").read_bytes()
    video_before = job.path("video.mp4").read_bytes()
    answer = client.post(f"/api/jobs/{job_id}/rerender", json={"pause_gain": 0.2, "emphasis_gain": 1.4})
    assert answer.status_code == 202, answer.text
    events = sse_events(client, f"/api/jobs/{job_id}/events")
    stages = [d["stage"] for k, d in events if k == "stage"]
    assert "chunk" in stages  # the re-render streams too
    assert [stage for stage in stages if stage != "chunk"] == ["governor", "video", "done"]
    assert events[-1][1]["state"] == "done"
    assert job.path("audio.wav").read_bytes() == audio_before
    assert job.path("video.mp4").read_bytes() != video_before
    gains = json.loads(job.path("gains.json").read_text())
    assert gains["config"]["pause_gain"] == 0.2 and min(gains["gains"]) == pytest.approx(0.2)


def test_rerender_rejects_out_of_range_and_unknown_settings(client, outputs):
    job_id = client.post("/api/jobs", json={"script": SHORT}).json()["job_id"]
    wait_for(client, job_id)
    answer = client.post(f"/api/jobs/{job_id}/rerender", json={"pause_gain": 7})
    assert answer.status_code == 422
    assert "pause_gain" in answer.json()["error"]["message"] and "1.5" in answer.json()["error"]["message"]
    answer = client.post(f"/api/jobs/{job_id}/rerender", json={"wobble": 1})
    assert answer.status_code == 422 and "wobble" in answer.json()["error"]["message"]
    missing = client.post(f"/api/jobs/{'0' * 32}/rerender", json={})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "not_found"


def test_unknown_job_is_404_with_a_readable_message(client):
    for job_id in ("0" * 32, "not-a-job"):
        answer = client.get(f"/api/jobs/{job_id}")
        assert answer.status_code == 404
        assert answer.json()["error"]["code"] == "not_found" and "job" in answer.json()["error"]["message"]
    assert client.get(f"/api/jobs/{'0' * 32}/events").status_code == 404


def test_openapi_schema_lists_every_route(client):
    schema = client.get("/openapi.json").json()
    for path in (
        "/api/generate/persona-video",
        "/api/jobs",
        "/api/jobs/{job_id}",
        "/api/jobs/{job_id}/events",
        "/api/jobs/{job_id}/rerender",
        "/api/jobs/{job_id}/files/{name}",
        "/api/personas",
        "/api/uploads/portrait",
        "/api/uploads/voice",
    ):
        assert path in schema["paths"], path
    generate = schema["components"]["schemas"]["GenerateRequest"]["properties"]
    assert generate["prompt"]["maxLength"] == 2000
    assert generate["max_tokens"]["anyOf"][0]["minimum"] == 16


def test_retention_runs_after_each_job(outputs, monkeypatch):
    monkeypatch.setenv("PERSONA_VIDEO_KEEP_JOBS", "2")
    with TestClient(create_server()) as client:
        ids = [client.post("/api/jobs", json={"script": "One. Two.", "seed": i}).json()["job_id"] for i in range(3)]
        for job_id in ids:
            wait_for(client, job_id)
    left = {p.name.removeprefix("persona_") for p in outputs.glob("persona_*")}
    assert len(left) == 2 and ids[-1] in left and ids[0] not in left
    assert np.all([(outputs / f"persona_{i}" / "manifest.json").is_file() for i in left])


def test_page_and_api_share_one_server(outputs):
    from persona_video.app.layout import build_ui

    with TestClient(create_server(build_ui())) as client:
        page = client.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert client.get("/api/personas").status_code == 200
        assert "/api/jobs" in client.get("/openapi.json").json()["paths"]
        unknown = client.get("/api/no-such-thing")
        assert unknown.status_code == 404 and "see /api/docs" in unknown.json()["error"]["message"]


def test_page_and_api_run_one_pipeline_at_a_time(outputs):
    """The page's events and the API's jobs share one pipeline slot: a page run that is
    streaming keeps an API job queued, and a page run waits (saying so) for an API job."""
    import time

    from persona_video.app import events as ui_events
    from persona_video.jobs.queue import PIPELINE_SLOT

    with TestClient(create_server()) as client:
        page = ui_events.speak_edited(None, "So, [pause 0.3] one at a time.", "mkbhd")
        next(page)  # the page's first update: nothing runs yet
        next(page)  # the page run now holds the slot (its script stage has finished)
        job_id = client.post("/api/jobs", json={"script": "Waiting my turn."}).json()["job_id"]
        time.sleep(1.0)
        status = client.get(f"/api/jobs/{job_id}").json()
        assert status["state"] == "queued" and status["position"] == 1
        updates = list(page)
        assert "Done" in updates[-1]["status"]
        assert wait_for(client, job_id)["state"] == "done"

        with PIPELINE_SLOT:  # as an API job holds it while it runs
            page = ui_events.speak_edited(None, "And now the page waits.", "mkbhd")
            next(page)
            assert "Waiting" in next(page)["status"]
        assert "Done" in list(page)[-1]["status"]
    page_job = Job.open(updates[-1]["job_id"]).manifest
    api_job = Job.open(job_id).manifest
    assert api_job["created"] >= page_job["finished"] - 0.05  # the API job ran after the page's


def test_warm_up_loads_each_shipped_personas_voice_and_portrait(tmp_path):
    import os
    import subprocess
    import sys

    # a fresh process, as the server starts: nothing is loaded until warm_up runs; it then speaks,
    # moves and draws one short sentence per persona (first calls are slow), leaving no job behind
    code = (
        "import persona_video.render.stage as stages, persona_video.speech.voices as voices;"
        "from persona_video.server import warm_up;"
        "before = (len(stages._ANIMATORS), sorted(voices._VOICES)); warm_up();"
        "print(before, (len(stages._ANIMATORS), sorted(voices._VOICES)))"
    )
    env = {**os.environ, "PERSONA_VIDEO_OUTPUTS": str(tmp_path / "outputs")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300, env=env)
    assert out.stdout.strip() == "(0, []) (2, ['heart'])"
    assert "not preloaded" not in out.stderr, out.stderr
    assert not (tmp_path / "outputs").exists() or not any((tmp_path / "outputs").iterdir())


def test_a_failing_first_sentence_at_warm_up_does_not_stop_the_rest_of_it(monkeypatch, caplog):
    import persona_video.server as server
    import persona_video.weights.preload as preload

    def broken(persona, portrait):
        raise RuntimeError("no ffmpeg here")

    preloaded = []
    monkeypatch.setattr(server, "_first_run", broken)
    monkeypatch.setattr(preload, "preload_heavy_models", lambda: preloaded.append(True))
    with caplog.at_level("WARNING", logger="persona_video.server"):
        server.warm_up(script_model=False)
    assert preloaded == [True]
    assert "the first sentence failed (RuntimeError: no ffmpeg here)" in caplog.text
