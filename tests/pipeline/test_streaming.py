"""The pipeline sentence by sentence on the real components: chunks while the job runs, the
finished MP4 made of the streamed segments, the same speech and motion as a batch run, cancel."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np
import pytest

from persona_video.encode.hls import concatenated_segments, read_playlist
from persona_video.encode.probe import ffmpeg_exe, probe
from persona_video.errors import Cancelled
from persona_video.governor import govern
from persona_video.jobs.folder import Job
from persona_video.motion.generator import generate_motion
from persona_video.personas import load_persona
from persona_video.pipeline import Request, governor_config_for, rerender, run
from persona_video.speech import read_wav, synthesize_with_intent
from persona_video.types import split_sentences

SCRIPT = (
    "So, [pause 0.4] the new *M4 Mac Mini* is small and *seriously* fast. It starts at *599 dollars*, "
    "which is the best value in a desktop today. [pause 0.5] Ports are on the front now. "
    "If you need a simple computer, this is the one to get."
)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list, list[float]]:
    root = tmp_path_factory.mktemp("outputs")
    events, arrived = [], []
    start = time.perf_counter()
    for event in run(Request(persona="ijustine", script=SCRIPT, seed=5), root=root):
        events.append(event)
        arrived.append(time.perf_counter() - start)
    return root, events, arrived


def _job(streamed) -> Job:
    root, events, _ = streamed
    return Job.open(events[-1].job_id, root)


def test_chunks_arrive_before_the_job_has_spoken_everything(streamed) -> None:
    _, events, _ = streamed
    stages = [e.stage for e in events]
    assert [s for s in stages if s != "chunk"] == ["script", "speech", "motion", "governor", "video", "done"]
    chunks = [e for e in events if e.stage == "chunk"]
    assert len(chunks) >= 4
    # the first segment is out before the speech stage has finished the last sentence
    assert stages.index("chunk") < stages.index("speech")
    assert [c.result.index for c in chunks] == list(range(len(chunks)))
    first = chunks[0].result
    assert first.start_s == 0.0 and first.path.is_file() and first.sentence >= 1
    # "drawing sentence k of n": n is the script's four sentences from the start (a given script is
    # whole at once), k goes from the first to the last as the drawing moves on
    drawing = [c.result.sentence for c in chunks]
    assert {c.result.sentences for c in chunks} == {4}
    assert drawing == sorted(drawing) and drawing[0] == 1 and drawing[-1] == 4


def test_finished_mp4_has_exactly_the_streamed_frames(streamed, tmp_path: Path) -> None:
    job = _job(streamed)
    stream = job.path("stream")
    segments, ended = read_playlist(stream)
    assert ended
    joined = concatenated_segments(stream, tmp_path / "joined.ts")
    info = probe(job.path("video.mp4"))
    timing = job.read_json("timing.json")
    assert info["num_frames"] == timing["num_frames"] and info["faststart"]
    assert segments[-1].end_s == pytest.approx(timing["num_frames"] / 25, abs=0.05)

    def frames(path: Path) -> list[bytes]:
        reader = imageio_ffmpeg.read_frames(str(path))
        reader.__next__()
        return list(reader)

    finished, played = frames(job.path("video.mp4")), frames(joined)
    assert len(finished) == len(played) == timing["num_frames"]
    assert finished == played
    # what a player decodes of the joined segments' sound (the AAC priming frame and the last
    # frame's padding included) ends within 80 ms of their pictures, and all of the speech is seen
    audio, rate = read_wav(job.path("audio.wav"))
    assert timing["num_frames"] * rate == len(audio) * 25
    decoded = subprocess.run(
        [ffmpeg_exe(), "-v", "error", "-i", str(joined), "-vn", "-ac", "1", "-f", "s16le", "-"],
        capture_output=True,
        check=True,
    ).stdout
    assert 0.0 <= len(decoded) / 2 / rate - timing["num_frames"] / 25 <= 0.08
    manifest = job.manifest
    assert manifest["stages"]["video"]["streamed_frames_match"] is True
    assert manifest["stages"]["video"]["streamed_segments"] == len(segments)


def test_streamed_speech_and_motion_are_those_of_the_whole_track(streamed) -> None:
    """Same seed, the same audio, blinks and head path whether streamed or made at once."""
    job = _job(streamed)
    persona = load_persona("ijustine")
    request = Request(**job.read_json("request.json"))
    from persona_video.script import script_from_text

    intent = script_from_text(SCRIPT, persona).intent
    batch = synthesize_with_intent(intent, persona, seed=request.seed)
    audio, rate = read_wav(job.path("audio.wav"))
    assert rate == batch.sample_rate and len(audio) == len(batch.audio)
    assert np.abs(audio - batch.audio).max() <= 1.0 / 32767 + 1e-7  # the WAV's 16 bits
    track = generate_motion(batch, persona.motion, seed=request.seed)
    governed, _ = govern(track, batch.timing, governor_config_for(persona, request.governor))
    assert np.array_equal(job.read_array("motion_raw.npy"), track.coeffs)
    assert np.array_equal(job.read_array("motion_governed.npy"), governed.coeffs)
    assert len(split_sentences(intent)) == 4


def test_audio_is_continuous_at_every_segment_join(streamed) -> None:
    job = _job(streamed)
    wav, rate = read_wav(job.path("audio.wav"))
    command = [ffmpeg_exe(), "-v", "error", "-i", str(job.path("video.mp4")), "-f", "s16le", "-ac", "1"]
    pcm = subprocess.run([*command, "-ar", str(rate), "pipe:1"], capture_output=True, check=True).stdout
    heard = np.frombuffer(pcm, "<i2").astype(np.float32) / 32767.0
    segments, _ = read_playlist(job.path("stream"))
    loud = np.sqrt(np.mean(wav**2))
    for segment in segments[:-1]:
        at = int(segment.end_s * rate)
        window = slice(at - rate // 50, at + rate // 50)  # 20 ms each side of the join
        difference = np.sqrt(np.mean((heard[window] - wav[window]) ** 2))
        assert difference < 0.1 * loud + 2e-3, (segment.index, difference, loud)
    assert len(heard) >= len(wav) - 2


def test_head_path_has_no_jump_at_segment_joins(streamed) -> None:
    job = _job(streamed)
    governed = job.read_array("motion_governed.npy")
    pose = governed[:, 64:70]
    steps = np.abs(np.diff(pose, axis=0)).max(axis=1)
    segments, _ = read_playlist(job.path("stream"))
    joins = [round(s.end_s * 25) - 1 for s in segments[:-1]]
    # a step across a join is no bigger than the motion's own frame-to-frame steps elsewhere
    assert max(steps[j] for j in joins) <= np.percentile(steps, 99) + 1e-6


def test_rerender_streams_its_frames_too(streamed) -> None:
    root, events, _ = streamed
    job_id = events[-1].job_id
    stages = [e.stage for e in rerender(job_id, {"pause_gain": 0.4, "emphasis_gain": 1.3}, root=root)]
    assert stages[0] == "governor" and stages[-2:] == ["video", "done"]
    assert stages.count("chunk") >= 4 and stages.index("chunk") < stages.index("video")
    job = Job.open(job_id, root)
    segments, ended = read_playlist(job.path("stream"))
    assert ended and probe(job.path("video.mp4"))["num_frames"] == job.read_json("timing.json")["num_frames"]


def test_a_long_sentence_plays_its_first_segment_while_the_rest_is_drawn(tmp_path: Path) -> None:
    # one sentence of about nine seconds: most of its frames are final at once, and the first
    # segment is handed out as soon as ffmpeg has cut it, not after all those frames are drawn
    # (then six or more segments would be finished by the time the first is reported)
    script = (
        "The new Mac Mini is small enough to hide behind a monitor and quiet enough to forget, "
        "yet it edits photos, compiles code, runs three video calls and plays music all day "
        "without making a single sound you could hear."
    )
    at_first_chunk = None
    for event in run(Request(persona="mkbhd", script=script, seed=3), root=tmp_path):
        if event.stage == "chunk" and at_first_chunk is None:
            segments, ended = read_playlist(Job.open(event.job_id, tmp_path).path("stream"))
            at_first_chunk = (event.result.index, len(segments), ended)
    assert at_first_chunk is not None
    index, finished_then, ended_then = at_first_chunk
    assert index == 0 and not ended_then
    assert finished_then <= 2  # ffmpeg was cutting the sentence's first seconds
    segments, ended = read_playlist(Job.open(event.job_id, tmp_path).path("stream"))
    assert ended and len(segments) >= 8


def test_cancel_stops_later_chunks_and_keeps_what_was_made(tmp_path: Path) -> None:
    cancel = threading.Event()
    seen = []
    with pytest.raises(Cancelled):
        for event in run(Request(persona="mkbhd", script=" ".join([SCRIPT] * 3)), root=tmp_path, cancel=cancel):
            seen.append(event)
            if event.stage == "chunk":
                cancel.set()
    job = Job.open(seen[-1].job_id, tmp_path)
    assert job.manifest["state"] == "cancelled"
    assert not job.has("video.mp4")
    assert list(job.path("stream").glob("seg_*.ts"))  # what was finished stays
    _wait_for_threads()


def test_a_listener_that_goes_away_stops_the_job(tmp_path: Path) -> None:
    events = run(Request(persona="mkbhd", script=" ".join([SCRIPT] * 3)), root=tmp_path)
    for event in events:
        if event.stage == "chunk":
            break
    events.close()  # the page closed
    job = Job.open(event.job_id, tmp_path)
    assert job.manifest["state"] == "cancelled" and not job.has("video.mp4")
    _wait_for_threads()


def _wait_for_threads() -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if not any(t.name in ("speech", "script-writer") for t in threading.enumerate()):
            return
        time.sleep(0.05)
    raise AssertionError("the job's threads are still running")


def test_xtts_streams_on_a_gpu_of_its_own_or_when_asked_never_on_zerogpu() -> None:
    from persona_video.errors import InputError
    from persona_video.pipeline.streaming import XTTS_STREAM_ENV, can_stream, xtts_streams
    from persona_video.types import BackendChoice
    from persona_video.weights.runtime import cuda_device_name

    assert xtts_streams({}) is (cuda_device_name() is not None)  # auto: a GPU here or not
    assert xtts_streams({XTTS_STREAM_ENV: "1"}) and not xtts_streams({XTTS_STREAM_ENV: "0"})
    # ZeroGPU lends the GPU for one call: the whole script is spoken under one lease
    assert not xtts_streams({XTTS_STREAM_ENV: "1", "SPACES_ZERO_GPU": "true"})
    with pytest.raises(InputError, match=f"{XTTS_STREAM_ENV} = 'yes' is not auto, 1 or 0"):
        xtts_streams({XTTS_STREAM_ENV: "yes"})
    embedded = {"motion": BackendChoice("embedded", ""), "enhance": BackendChoice("none", "")}
    assert can_stream({**embedded, "speech": BackendChoice("hibari", "")})
    assert can_stream({**embedded, "speech": BackendChoice("xtts", "")}) is xtts_streams()
    assert not can_stream({**embedded, "speech": BackendChoice("hibari", ""), "enhance": BackendChoice("gfpgan", "")})
