"""The pipeline end to end on the real components (short scripts keep it quick)."""

import json

import numpy as np
import pytest

from persona_video.encode.probe import probe
from persona_video.errors import InputError, NotFoundError, StageError
from persona_video.jobs.folder import JOB_FILES, Job
from persona_video.pipeline import Request, rerender, run, speak_script

SHORT = "So, [pause 0.4] this is *seriously* fast. It costs *599 dollars*."


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    root = tmp_path_factory.mktemp("outputs")
    events = list(run(Request(persona="mkbhd", script=SHORT, seed=2), root=root))
    return root, events


def test_events_stream_in_stage_order(finished):
    _, all_events = finished
    events = [e for e in all_events if e.stage != "chunk"]  # the stream's segments (test_streaming.py)
    assert [e.stage for e in events] == ["script", "speech", "motion", "governor", "video", "done"]
    assert len({e.job_id for e in events}) == 1
    assert events[0].result.markup == SHORT and events[0].backend == "given"
    assert events[1].backend == "hibari" and events[1].result.voice == "heart"
    assert events[3].result[1].shape == (events[1].result.timing.num_frames,)


def test_job_folder_holds_every_stage(finished):
    root, events = finished
    job = Job.open(events[0].job_id, root)
    for name in JOB_FILES:
        if name != "portrait.png":
            assert job.has(name), name
    manifest = job.read_json("manifest.json")
    assert manifest["state"] == "done" and manifest["processing_time"] > 0
    assert set(manifest["stages"]) == {"script", "speech", "motion", "governor", "video"}
    assert manifest["backends"]["speech"]["backend"] == "hibari" and "xtts" in manifest["backends"]["speech"]["why"]
    timing = job.read_json("timing.json")
    info = probe(job.path("video.mp4"))
    assert info["num_frames"] == timing["num_frames"] == int(timing["total_duration"] * 25)
    assert info["video_codec"] == "h264" and info["audio_codec"] == "aac"
    assert job.read_array("motion_raw.npy").shape == (timing["num_frames"], 70)
    assert "WEBVTT" in job.path("captions.vtt").read_text()


def test_rerender_reuses_audio_and_motion_and_replaces_the_video(finished):
    root, events = finished
    job = Job.open(events[0].job_id, root)
    audio_before = job.path("audio.wav").read_bytes()
    raw_before = job.read_array("motion_raw.npy")
    video_before = job.path("video.mp4").read_bytes()
    stages = [
        e.stage for e in without_chunks(rerender(job.job_id, {"pause_gain": 0.3, "emphasis_gain": 1.4}, root=root))
    ]
    assert stages == ["governor", "video", "done"]
    assert job.path("audio.wav").read_bytes() == audio_before
    assert np.array_equal(job.read_array("motion_raw.npy"), raw_before)
    assert job.path("video.mp4").read_bytes() != video_before
    gains = job.read_json("gains.json")
    assert gains["config"]["pause_gain"] == 0.3 and min(gains["gains"]) == pytest.approx(0.3, abs=1e-3)
    assert json.loads(job.path("request.json").read_text())["governor"]["pause_gain"] == 0.3


def test_edited_script_is_honoured(finished):
    root, events = finished
    edited = "Now *this* is the edited script. [pause 0.5] Short and clear."
    new_events = list(speak_script(events[0].job_id, edited, root=root))
    job = Job.open(new_events[-1].job_id, root)
    assert job.job_id != events[0].job_id
    assert job.path("script.txt").read_text().strip() == edited


@pytest.mark.parametrize(
    ("request_", "error"),
    [
        (Request(persona="nobody", prompt="Explain it"), NotFoundError),
        (Request(prompt="   "), InputError),
        (Request(prompt="x" * 5000), InputError),
        (Request(script="This is *broken."), InputError),
        (Request(prompt="Explain it", speech_backend="festival"), InputError),
        (Request(prompt="Explain it", governor={"pause_gain": 7}), InputError),
        (Request(prompt="Explain it", governor={"wobble": 1}), InputError),
    ],
)
def test_bad_input_leaves_nothing_behind(tmp_path, request_, error):
    with pytest.raises(error):
        list(run(request_, root=tmp_path))
    assert not any(tmp_path.iterdir())


def test_a_failed_stage_leaves_a_manifest_saying_which_and_why(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", "/bin/false")
    with pytest.raises(StageError, match="encode"):
        list(run(Request(script="Hello there."), root=tmp_path))
    (folder,) = list(tmp_path.iterdir())
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["state"] == "failed" and manifest["error"]["stage"] == "video"
    assert "encode" in manifest["error"]["message"]
    assert not (folder / "video.mp4").exists()


def test_rerender_of_unknown_job_is_not_found(tmp_path):
    with pytest.raises(NotFoundError):
        list(rerender("0" * 32, {}, root=tmp_path))
    with pytest.raises(NotFoundError):
        list(rerender("../../etc", {}, root=tmp_path))


def test_heavy_backends_asked_for_by_name_say_what_is_missing(tmp_path, monkeypatch):
    from persona_video.errors import BackendUnavailable

    monkeypatch.delenv("PERSONA_VIDEO_SADTALKER_DIR", raising=False)
    with pytest.raises(BackendUnavailable, match="PERSONA_VIDEO_SADTALKER_DIR"):
        list(run(Request(prompt="Explain it", motion_backend="sadtalker"), root=tmp_path))
    with pytest.raises(BackendUnavailable, match="GFPGANv1.4.pth"):
        list(run(Request(prompt="Explain it", enhancer="gfpgan"), root=tmp_path))
    with pytest.raises(BackendUnavailable, match="xtts"):
        list(run(Request(prompt="Explain it", speech_backend="xtts"), root=tmp_path))
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------- frame cache


@pytest.fixture
def fresh_job(tmp_path):
    from persona_video.render.frame_cache import FRAMES

    FRAMES.clear()
    events = list(run(Request(persona="ijustine", script=SHORT, seed=5), root=tmp_path))
    return tmp_path, events[0].job_id


def cached_entry(job_id: str):
    from persona_video.render.frame_cache import FRAMES

    entry = next((e for e in [FRAMES._entry] if e is not None and e.key[0] == job_id), None)
    assert entry is not None, "the last render is not in the frame cache"
    return entry


def without_chunks(events) -> list:
    """The stage events of a run, without the stream's segments (test_streaming.py has those)."""
    return [e for e in events if e.stage != "chunk"]


def video_stage(root, job_id: str) -> dict:
    return Job.open(job_id, root).read_json("manifest.json")["stages"]["video"]


def test_one_slider_redraws_only_the_frames_it_changes_and_the_frames_are_right(fresh_job):
    from persona_video.encode.encoder import rgb_to_yuv
    from persona_video.personas import load_persona
    from persona_video.render.stage import load_portrait_for

    root, job_id = fresh_job
    before = Job.open(job_id, root).read_array("motion_governed.npy")
    events = without_chunks(rerender(job_id, {"pause_gain": 0.3}, root=root))
    after = Job.open(job_id, root).read_array("motion_governed.npy")
    changed = ~np.all(before == after, axis=1)
    stage = video_stage(root, job_id)
    assert 0 < changed.sum() < len(after)  # the pauses only
    assert stage["reused_frames"] == len(after) - changed.sum()
    assert events[1].notice.startswith(f"{stage['reused_frames']} of {len(after)} frames had the same motion")
    # every frame the cache holds, reused or redrawn, is the frame these coefficients make
    animator = load_portrait_for(load_persona("ijustine"), None, "crop").animator
    entry = cached_entry(job_id)
    assert np.array_equal(entry.coeffs, after)
    for index in range(len(after)):
        assert np.array_equal(entry.frames[index], rgb_to_yuv(animator.render_frame(after[index]))), index
    info = probe(Job.open(job_id, root).path("video.mp4"))
    assert info["num_frames"] == len(after) and info["audio_codec"] == "aac"


def test_settings_that_do_not_change_the_motion_keep_the_video(fresh_job):
    root, job_id = fresh_job
    video = Job.open(job_id, root).path("video.mp4")
    stamp = video.stat().st_mtime_ns
    events = without_chunks(rerender(job_id, {"expression_clamp_sigma": 2.0, "pose_smoothing_s": 0.5}, root=root))
    assert [e.stage for e in events] == ["governor", "video", "done"]
    assert events[1].notice.startswith("The motion is the same as in the last render") and "257" in events[1].notice
    assert video.stat().st_mtime_ns == stamp
    stage = video_stage(root, job_id)
    assert stage["reused_frames"] == stage["frames"] and stage["seconds"] < 0.5


def test_a_video_changed_behind_the_cache_is_written_again(fresh_job):
    root, job_id = fresh_job
    video = Job.open(job_id, root).path("video.mp4")
    made = video.read_bytes()
    video.write_bytes(b"not a video")  # something else rewrote it
    list(rerender(job_id, {"expression_clamp_sigma": 2.0}, root=root))
    assert video.read_bytes() == made
    assert probe(video)["num_frames"] == video_stage(root, job_id)["frames"]


def test_going_back_to_an_earlier_setting_gives_back_its_video_at_once(fresh_job):
    root, job_id = fresh_job
    video = Job.open(job_id, root).path("video.mp4")
    governed = video.read_bytes()
    list(rerender(job_id, {"enabled": False}, root=root))  # every frame changes: drawn and encoded
    ungoverned = video.read_bytes()
    assert ungoverned != governed and video_stage(root, job_id)["reused_frames"] < video_stage(root, job_id)["frames"]
    events = without_chunks(rerender(job_id, {"enabled": True}, root=root))
    assert events[1].notice.startswith("The motion is the same as in an earlier render of this job")
    assert video.read_bytes() == governed
    stage = video_stage(root, job_id)
    assert stage["reused_frames"] == stage["frames"] and stage["seconds"] < 0.5
    list(rerender(job_id, {"enabled": False}, root=root))
    assert video.read_bytes() == ungoverned
    # the frames kept are still those of the last render drawn: a slider redraws only what it changes
    list(rerender(job_id, {"enabled": True, "pause_gain": 0.3}, root=root))
    assert 0 < video_stage(root, job_id)["reused_frames"] < video_stage(root, job_id)["frames"]


def test_a_failed_render_leaves_no_cached_frames(fresh_job, tmp_path, monkeypatch):
    from persona_video.render.frame_cache import FRAMES

    root, job_id = fresh_job
    exe = tmp_path / "ffmpeg"
    exe.write_text("#!/bin/sh\necho 'simulated encoder crash' >&2\nexit 1\n")
    exe.chmod(0o755)
    monkeypatch.setenv("IMAGEIO_FFMPEG_EXE", str(exe))
    with pytest.raises(StageError, match="simulated encoder crash"):
        list(rerender(job_id, {"pause_gain": 0.2}, root=root))
    assert FRAMES._entry is None
    monkeypatch.delenv("IMAGEIO_FFMPEG_EXE")
    list(rerender(job_id, {"pause_gain": 0.25}, root=root))
    assert video_stage(root, job_id)["reused_frames"] == 0  # drawn again from scratch


def test_the_frame_cache_can_be_turned_off_and_checks_its_setting(fresh_job, monkeypatch):
    from persona_video.render.frame_cache import FRAMES, budget_bytes

    root, job_id = fresh_job
    monkeypatch.setenv("PERSONA_VIDEO_FRAME_CACHE_MB", "0")
    list(rerender(job_id, {"pause_gain": 0.3}, root=root))
    list(rerender(job_id, {"pause_gain": 0.35}, root=root))
    assert video_stage(root, job_id)["reused_frames"] == 0 and FRAMES._entry is None
    for bad in ("lots", "-1"):
        monkeypatch.setenv("PERSONA_VIDEO_FRAME_CACHE_MB", bad)
        with pytest.raises(ValueError, match="PERSONA_VIDEO_FRAME_CACHE_MB"):
            budget_bytes()
