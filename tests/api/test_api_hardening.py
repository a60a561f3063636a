"""Hardening of the REST API: bad input, path tricks, uploads, faults and load.

Every bad request must get a 4xx with a message a person can act on and leave
no job folder behind; faults must end in a usable result with a notice or a
failed job whose manifest says which stage and why.
"""

import io

import numpy as np
import pytest
import soundfile
from api_support import isolate, wait_for
from fastapi.testclient import TestClient
from PIL import Image

from persona_video.jobs.folder import Job
from persona_video.render import load_portrait
from persona_video.server import create_server

SHORT = "So, [pause 0.3] this is *seriously* fast."


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("hardening_outputs")
    with pytest.MonkeyPatch.context() as patch:
        isolate(patch, root, PERSONA_VIDEO_KEEP_JOBS="200")
        yield root


@pytest.fixture(scope="module")
def client(outputs):
    with TestClient(create_server(max_body_bytes=8 * 1024 * 1024)) as test_client:
        yield test_client


def job_folders(root):
    return sorted(p.name for p in root.glob("persona_*"))


def png(image: np.ndarray) -> bytes:
    out = io.BytesIO()
    Image.fromarray(image).save(out, format="PNG")
    return out.getvalue()


def wav(seconds: float, amplitude: float = 0.3, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    voiced = amplitude * np.sin(2 * np.pi * 180 * t) * (0.6 + 0.4 * np.sin(2 * np.pi * 3 * t))
    out = io.BytesIO()
    soundfile.write(out, voiced.astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return out.getvalue()


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "status", "needle"),
    [
        ({"prompt": ""}, 422, "prompt"),
        ({"prompt": "   \n\t "}, 422, "prompt is blank"),
        ({"prompt": "x" * 5000}, 422, "at most 2000 characters"),
        ({"prompt": "Explain tides", "persona": "nobody"}, 404, "unknown persona 'nobody': choose one of"),
        ({"prompt": "Explain tides", "persona": "../etc"}, 422, "persona"),
        ({"prompt": "Explain tides", "temperature": 2.5}, 422, "temperature: Input should be less than or equal to 2"),
        ({"prompt": "Explain tides", "temperature": -0.1}, 422, "temperature"),
        ({"prompt": "Explain tides", "max_tokens": 8}, 422, "max_tokens: Input should be greater than or equal to 16"),
        ({"prompt": "Explain tides", "max_tokens": 5000}, 422, "max_tokens"),
        ({"prompt": "Explain tides", "colour": "red"}, 422, "colour: Extra inputs are not permitted"),
        ({}, 422, "prompt: Field required"),
    ],
)
def test_bad_generate_requests_get_clear_errors_and_leave_nothing(client, outputs, body, status, needle):
    before = job_folders(outputs)
    answer = client.post("/api/generate/persona-video", json=body)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert needle in error["message"] and error["code"] in ("invalid_input", "not_found")
    assert job_folders(outputs) == before


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"script": "So [pause nine] this."}, "pause length in seconds must be a number"),
        ({"script": "So *this is broken."}, "is never closed: add the closing"),
        ({"script": "Hi", "prompt": "Explain tides"}, "not both"),
        ({"script": "Hi there.", "governor": {"pause_gain": -1}}, "governor.pause_gain"),
        ({"script": "Hi there.", "voice": "darth"}, "voice"),
        ({"script": "Hi there.", "speed": 9}, "speed"),
        ({"script": "Hi there.", "portrait_upload": "0" * 32}, "no portrait upload"),
        ({"script": "Hi there.", "portrait_upload": "../../etc/passwd"}, "portrait_upload"),
    ],
)
def test_bad_job_requests_get_clear_errors_and_leave_nothing(client, outputs, body, needle):
    before = job_folders(outputs)
    answer = client.post("/api/jobs", json=body)
    assert 400 <= answer.status_code < 500, answer.text
    assert needle in answer.json()["error"]["message"]
    assert job_folders(outputs) == before


def test_malformed_json_is_400(client):
    answer = client.post("/api/jobs", content=b'{"prompt": ', headers={"content-type": "application/json"})
    assert answer.status_code == 400
    assert answer.json()["error"] == {
        "code": "bad_request",
        "message": 'the body is not valid JSON: send a JSON object, e.g. {"prompt": "Explain the M4 Mac Mini"}',
    }


@pytest.fixture(scope="module")
def finished_job(client):
    job_id = client.post("/api/jobs", json={"script": SHORT}).json()["job_id"]
    assert wait_for(client, job_id)["state"] == "done"
    return job_id


@pytest.mark.parametrize(
    "tail",
    [
        "files/..%2Fmanifest.json",
        "files/..%2F..%2F..%2Fetc%2Fpasswd",
        "files/%2Fetc%2Fpasswd",
        "files/video.mp4%00.txt",
        "files/.manifest.json.tmp",
        "files/VIDEO.MP4",
        "files/%2e%2e",
        "files/../../../../etc/passwd",
    ],
)
def test_path_tricks_in_file_urls_are_404(client, finished_job, tail):
    answer = client.get(f"/api/jobs/{finished_job}/{tail}")
    assert answer.status_code == 404, (tail, answer.status_code)
    assert b"root:" not in answer.content


@pytest.mark.parametrize(
    "job_id", ["..%2F..%2Fetc", "%2Fetc%2Fpasswd", "persona_" + "0" * 32, "A" * 32, "0" * 31 + "%00", "0" * 33]
)
def test_path_tricks_in_job_ids_are_404(client, job_id):
    for url in (f"/api/jobs/{job_id}", f"/api/jobs/{job_id}/files/manifest.json"):
        answer = client.get(url)
        assert answer.status_code == 404, (url, answer.status_code)


def test_known_files_are_served_inline(client, finished_job):
    answer = client.get(f"/api/jobs/{finished_job}/files/manifest.json")
    assert answer.status_code == 200 and answer.json()["state"] == "done"
    video = client.get(f"/api/jobs/{finished_job}/files/video.mp4")
    assert video.headers["content-type"] == "video/mp4" and video.headers["content-disposition"].startswith("inline")


# --- uploads -------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def grace():
    return load_portrait("builtin:grace_hopper")


@pytest.fixture(scope="module")
def astronaut():
    return load_portrait("builtin:astronaut")


def upload(client, kind, data, name="file.bin"):
    return client.post(f"/api/uploads/{kind}", files={"file": (name, data, "application/octet-stream")})


@pytest.mark.parametrize(
    ("make", "needle"),
    [
        (lambda g, a: b"this is not a picture", "not an image: upload a JPEG or PNG photo"),
        (lambda g, a: png(np.full((400, 400, 3), 128, np.uint8)), "no face found"),
        (lambda g, a: png(np.concatenate([g, g], axis=1)), "2 faces found"),
        (lambda g, a: png(np.asarray(Image.fromarray(a).resize((256, 256)))), "too small"),
        (lambda g, a: png(np.zeros((7100, 7100, 3), np.uint8)), "50 megapixels"),
        (lambda g, a: b"", "is empty"),
    ],
    ids=["not-image", "no-face", "two-faces", "tiny-face", "50-megapixels", "empty"],
)
def test_bad_portraits_are_refused_with_the_reason(client, outputs, grace, astronaut, make, needle):
    answer = upload(client, "portrait", make(grace, astronaut), "../../me.png")
    assert answer.status_code == 422, answer.text
    assert needle in answer.json()["error"]["message"]
    assert "../" not in answer.json()["error"]["message"]
    assert not (outputs / "uploads").exists() or not list((outputs / "uploads").glob("portrait_*"))


def test_request_over_the_size_limit_is_413(client):
    big = b"\0" * (9 * 1024 * 1024)
    answer = upload(client, "portrait", big)
    assert answer.status_code == 413 and "larger than 8 MB" in answer.json()["error"]["message"]

    def chunks():  # no Content-Length: the limit holds while streaming too
        for _ in range(9):
            yield b"\0" * (1024 * 1024)

    streamed = client.post("/api/jobs", content=chunks(), headers={"content-type": "application/json"})
    assert streamed.status_code == 413 and streamed.json()["error"]["code"] == "too_large"


def test_portrait_upload_drives_a_job(client, astronaut):
    answer = upload(client, "portrait", png(astronaut), "astronaut.png")
    assert answer.status_code == 201, answer.text
    upload_id = answer.json()["upload_id"]
    job_id = client.post("/api/jobs", json={"script": "Hello.", "portrait_upload": upload_id}).json()["job_id"]
    assert wait_for(client, job_id)["state"] == "done"
    saved = np.asarray(Image.open(Job.open(job_id).path("portrait.png")))
    assert saved.shape == astronaut.shape and np.array_equal(saved, astronaut)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"RIFF\x10\x00\x00\x00WAVEjunkjunk", "not readable audio"),
        (wav(5.0, amplitude=0.0), "is silent"),
        (wav(1.0), "1.0 s long"),
        (wav(40.0), "40.0 s long: at most 30 s"),
        (b"", "is empty"),
    ],
    ids=["corrupt", "silent", "too-short", "too-long", "empty"],
)
def test_bad_voice_files_are_422_with_the_reason(client, data, needle):
    answer = upload(client, "voice", data, "voice.wav")
    assert answer.status_code == 422, answer.text
    assert needle in answer.json()["error"]["message"]


def test_voice_upload_without_xtts_uses_the_default_voice_with_a_notice(client):
    answer = upload(client, "voice", wav(5.0), "me.wav")
    assert answer.status_code == 201 and answer.json()["detail"]["duration_s"] == 5.0
    body = {"script": "Hello there.", "voice_upload": answer.json()["upload_id"]}
    status = wait_for(client, client.post("/api/jobs", json=body).json()["job_id"])
    assert status["state"] == "done"
    assert any("voice cloning (XTTS) is not available here" in n for n in status["notices"])


@pytest.mark.parametrize(
    ("name", "value"),
    [("PERSONA_VIDEO_FRAME_CACHE_MB", "lots"), ("PERSONA_VIDEO_KEEP_JOBS", "0"), ("PERSONA_VIDEO_QUEUE_SIZE", "x")],
)
def test_a_bad_setting_stops_the_server_at_start_naming_it(monkeypatch, name, value):
    from persona_video.server import create_server

    monkeypatch.setenv(name, value)
    with pytest.raises(ValueError, match=name):
        create_server()
