"""XTTS sentence by sentence: on a GPU of its own (here asked for on the CPU, with the tiny
random-weight checkpoint) an XTTS job plays its first segment while later sentences are still
being spoken, and its finished MP4 is the streamed segments; by default on a CPU it runs stage
after stage, the video after all the speech."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile

pytest.importorskip("torch")
pytest.importorskip("TTS")

from persona_video.encode.hls import read_playlist  # noqa: E402
from persona_video.encode.probe import probe  # noqa: E402
from persona_video.jobs.folder import Job  # noqa: E402
from persona_video.pipeline import Request, run  # noqa: E402
from persona_video.pipeline.streaming import XTTS_STREAM_ENV  # noqa: E402

SCRIPT = "Tides rise and fall twice a day. The moon pulls on the sea. [pause 0.4] The sun pulls too, a little less."


def _reference(tmp_path: Path) -> Path:
    path = tmp_path / "voice.wav"
    t = np.arange(4 * 16000) / 16000
    soundfile.write(str(path), (0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32), 16000)
    return path


def _events(tiny_xtts: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stream: str) -> tuple[Job, list]:
    monkeypatch.setenv("PERSONA_VIDEO_CHECKPOINTS", str(tiny_xtts.parent))
    monkeypatch.setenv(XTTS_STREAM_ENV, stream)
    request = Request(persona="mkbhd", script=SCRIPT, speech_backend="xtts", reference_wav=str(_reference(tmp_path)))
    events = list(run(request, root=tmp_path / "outputs"))
    assert events[-1].stage == "done", events[-1]
    return Job.open(events[-1].job_id, tmp_path / "outputs"), [event.stage for event in events]


def test_xtts_streams_when_it_runs_on_a_gpu_of_its_own(tiny_xtts: Path, tmp_path: Path, monkeypatch) -> None:
    job, stages = _events(tiny_xtts, tmp_path, monkeypatch, "1")
    manifest = job.manifest
    assert manifest["stages"]["speech"]["backend"] == "xtts"
    # the first segment came before the last sentence was spoken (the speech event ends the speech)
    assert stages.index("chunk") < stages.index("speech")
    video = manifest["stages"]["video"]
    segments, ended = read_playlist(job.path("stream"))
    assert ended and video["streamed_frames_match"] is True and video["streamed_segments"] == len(segments)
    info = probe(job.path("video.mp4"))
    audio_s = soundfile.info(str(job.path("audio.wav"))).duration
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert abs(info["video_duration_s"] - audio_s) <= 0.08


def test_xtts_on_a_cpu_runs_stage_after_stage_by_default(tiny_xtts: Path, tmp_path: Path, monkeypatch) -> None:
    job, stages = _events(tiny_xtts, tmp_path, monkeypatch, "auto")
    assert job.manifest["stages"]["speech"]["backend"] == "xtts"
    assert stages.index("speech") < stages.index("chunk")  # the video only after all the speech
