"""Going on with a job whose process died mid-run (what a worker does with a job picked up
again): the finished stages are read back from the job folder, not made again, and the rest
come out as in an uninterrupted run."""

import numpy as np
import pytest

from persona_video.encode.probe import probe
from persona_video.jobs.folder import Job
from persona_video.pipeline import Request, resume, run
from persona_video.pipeline.resume import finished_stages

SCRIPT = "So, [pause 0.3] this is *seriously* fast. And it keeps going for a while longer."
STAGES = ["script", "speech", "motion", "governor", "video", "done"]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    events = list(run(Request(script=SCRIPT, seed=4), root=root))
    return root, events[-1].result


def interrupted_after(root, stages: int) -> Job:
    """A job whose process stopped once ``stages`` stage events were out (the stream's chunk
    events not counted): its generator dropped, and its manifest left saying running, as a
    process that died leaves it (a generator dropped in a live process marks it cancelled)."""
    events = run(Request(script=SCRIPT, seed=4), root=root)
    seen = []
    while len(seen) < stages:
        event = next(events)
        if event.stage != "chunk":
            seen.append(event)
    events.close()
    job = Job.open(seen[0].job_id, root)
    job.set_state("running")
    return job


def test_a_job_stopped_after_speech_goes_on_from_motion(uninterrupted):
    root, reference = uninterrupted
    job = interrupted_after(root, 2)
    assert job.manifest["state"] == "running" and finished_stages(job) == ("script", "speech")
    audio_mtime = job.path("audio.wav").stat().st_mtime_ns
    recorded = job.manifest["stages"]["speech"]["seconds"]
    events = [e for e in resume(job.job_id, root=root, attempt={"worker": "w2", "pid": 2}) if e.stage != "chunk"]
    assert [e.stage for e in events] == STAGES
    assert events[1].seconds == recorded and events[1].result.voice == "heart"  # read back, not spoken again
    assert events[0].result.markup == SCRIPT
    job = Job.open(job.job_id, root)
    assert job.path("audio.wav").stat().st_mtime_ns == audio_mtime
    assert job.manifest["state"] == "done" and finished_stages(job) == tuple(STAGES[:-1])
    (attempt,) = job.manifest["attempts"]
    assert attempt["worker"] == "w2" and attempt["resumed_after"] == "speech"
    # motion from the read-back speech (phonemes from speech.json) is the uninterrupted run's
    assert np.allclose(job.read_array("motion_raw.npy"), reference.read_array("motion_raw.npy"), atol=1e-4)
    info = probe(job.path("video.mp4"))
    assert info["num_frames"] == job.read_json("timing.json")["num_frames"] and info["audio_codec"] == "aac"


def test_a_job_stopped_after_its_video_only_finishes(tmp_path):
    job = interrupted_after(tmp_path, 5)
    job.set_state("running")  # as if the process died between the video and the last manifest write
    video = job.path("video.mp4").read_bytes()
    events = [e for e in resume(job.job_id, root=tmp_path) if e.stage != "chunk"]
    assert [e.stage for e in events] == STAGES
    assert Job.open(job.job_id, tmp_path).manifest["state"] == "done"
    assert job.path("video.mp4").read_bytes() == video


def test_a_job_stopped_before_any_stage_starts_from_the_script(tmp_path):
    job = interrupted_after(tmp_path, 1)
    job.manifest["stages"].pop("script")  # as if it died before the script stage ended
    job.save_manifest()
    assert finished_stages(Job.open(job.job_id, tmp_path)) == ()
    assert [e.stage for e in resume(job.job_id, root=tmp_path) if e.stage != "chunk"] == STAGES
