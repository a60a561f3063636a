"""Retention of the outputs folder: count and age limits, never a job in progress."""

import os
import time

import pytest

from persona_video.jobs.folder import Job
from persona_video.jobs.retention import RetentionPolicy, apply_retention

HOUR_S = 3600.0


def make_job(root, state, age_h, now):
    job = Job.create({"persona": "mkbhd", "script": "Hi."}, root)
    job.manifest["created"] = now - age_h * HOUR_S
    job.set_state(state)
    return job.job_id


def test_keeps_the_newest_jobs_up_to_the_count(tmp_path):
    now = time.time()
    ids = [make_job(tmp_path, "done", age_h=5 - i, now=now) for i in range(5)]  # ids[-1] is the newest
    deleted = apply_retention(RetentionPolicy(keep_jobs=2, keep_hours=24), tmp_path, now=now)
    assert deleted == ids[:3]
    assert sorted(p.name for p in tmp_path.glob("persona_*")) == sorted(f"persona_{i}" for i in ids[3:])


def test_removes_jobs_older_than_the_age_limit(tmp_path):
    now = time.time()
    old = make_job(tmp_path, "done", age_h=30, now=now)
    failed_old = make_job(tmp_path, "failed", age_h=25, now=now)
    young = make_job(tmp_path, "done", age_h=1, now=now)
    deleted = apply_retention(RetentionPolicy(keep_jobs=50, keep_hours=24), tmp_path, now=now)
    assert set(deleted) == {old, failed_old}
    assert (tmp_path / f"persona_{young}").is_dir()


@pytest.mark.parametrize("state", ["running", "queued"])
def test_never_deletes_a_job_in_progress(tmp_path, state):
    now = time.time()
    busy = make_job(tmp_path, state, age_h=100, now=now)
    done = [make_job(tmp_path, "done", age_h=0.1 * i, now=now) for i in range(3)]
    deleted = apply_retention(RetentionPolicy(keep_jobs=1, keep_hours=24), tmp_path, now=now)
    assert busy not in deleted and (tmp_path / f"persona_{busy}" / "manifest.json").is_file()
    assert set(deleted) == set(done[1:])  # done[0] is the newest


def test_active_ids_from_the_queue_are_kept_whatever_the_manifest_says(tmp_path):
    now = time.time()
    rerendering = make_job(tmp_path, "done", age_h=48, now=now)
    deleted = apply_retention(RetentionPolicy(1, 24), tmp_path, active={rerendering}, now=now)
    assert deleted == [] and (tmp_path / f"persona_{rerendering}").is_dir()


def test_touches_only_job_folders_and_expired_uploads(tmp_path):
    now = time.time()
    (tmp_path / "notes").mkdir()
    (tmp_path / "persona_not-a-job").mkdir()
    (tmp_path / "readme.txt").write_text("keep me")
    half_made = tmp_path / ("persona_" + "a" * 32)
    half_made.mkdir()  # no manifest yet: a job being created right now
    uploads = tmp_path / "uploads"
    uploads.mkdir()
    stale = uploads / ("portrait_" + "b" * 32 + ".png")
    fresh = uploads / ("voice_" + "c" * 32 + ".wav")
    other = uploads / "keep.txt"
    for path in (stale, fresh, other):
        path.write_bytes(b"x")
    os.utime(stale, (now - 30 * HOUR_S, now - 30 * HOUR_S))
    os.utime(other, (now - 30 * HOUR_S, now - 30 * HOUR_S))
    apply_retention(RetentionPolicy(1, 24), tmp_path, now=now)
    assert (tmp_path / "notes").is_dir() and (tmp_path / "persona_not-a-job").is_dir()
    assert (tmp_path / "readme.txt").is_file() and half_made.is_dir()
    assert not stale.exists() and fresh.is_file() and other.is_file()


def test_policy_from_environment(monkeypatch):
    monkeypatch.setenv("PERSONA_VIDEO_KEEP_JOBS", "7")
    monkeypatch.setenv("PERSONA_VIDEO_KEEP_HOURS", "1.5")
    assert RetentionPolicy.from_env() == RetentionPolicy(7, 1.5)
    monkeypatch.setenv("PERSONA_VIDEO_KEEP_JOBS", "lots")
    with pytest.raises(ValueError, match="PERSONA_VIDEO_KEEP_JOBS = 'lots' is not a whole number"):
        RetentionPolicy.from_env()
    monkeypatch.setenv("PERSONA_VIDEO_KEEP_JOBS", "0")
    with pytest.raises(ValueError, match="PERSONA_VIDEO_KEEP_JOBS = 0 must be 1 or more"):
        RetentionPolicy.from_env()


def test_a_job_left_running_by_a_crash_is_marked_interrupted_and_ages_out(tmp_path):
    now = time.time()
    crashed = make_job(tmp_path, "running", age_h=30, now=now)
    running = make_job(tmp_path, "running", age_h=30, now=now)
    queued_here = make_job(tmp_path, "queued", age_h=30, now=now)
    hours_ago = now - 2 * HOUR_S
    for job_id in (crashed, queued_here):  # no stage has rewritten their manifests for two hours
        os.utime(tmp_path / f"persona_{job_id}" / "manifest.json", (hours_ago, hours_ago))
    deleted = apply_retention(RetentionPolicy(keep_jobs=50, keep_hours=24), tmp_path, active={queued_here}, now=now)
    assert deleted == [crashed]  # older than the age limit once it no longer counts as running
    assert {running, queued_here} <= {p.name.removeprefix("persona_") for p in tmp_path.glob("persona_*")}
    assert Job.open(running, tmp_path).manifest["state"] == "running"  # still being written: untouched
    assert Job.open(queued_here, tmp_path).manifest["state"] == "queued"  # the queue holds it


def test_an_interrupted_job_says_so_when_asked(tmp_path):
    now = time.time()
    crashed = make_job(tmp_path, "running", age_h=1, now=now)
    Job.open(crashed, tmp_path).record_stage("speech", "hibari", 0.2)
    hours_ago = now - 2 * HOUR_S
    os.utime(tmp_path / f"persona_{crashed}" / "manifest.json", (hours_ago, hours_ago))
    assert apply_retention(RetentionPolicy(keep_jobs=50, keep_hours=24), tmp_path, now=now) == []
    manifest = Job.open(crashed, tmp_path).manifest
    assert manifest["state"] == "failed" and manifest["error"]["code"] == "interrupted"
    assert manifest["error"]["stage"] == "motion" and "generate it again" in manifest["error"]["message"]


def test_a_job_whose_process_died_is_interrupted_at_once_and_a_live_ones_is_not(tmp_path):
    import subprocess
    import sys

    # a real second process runs a job (as the CLI or an earlier server would) and is killed mid-run
    code = (
        "import sys, time; from pathlib import Path; from persona_video.jobs.folder import Job;"
        "job = Job.create({'persona': 'mkbhd', 'script': 'Hi.'}, Path(sys.argv[1]));"
        "job.record_stage('script', 'offline', 0.01); print(job.job_id, flush=True); time.sleep(60)"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", code, str(tmp_path)], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    try:
        killed, alive = (run.stdout.readline().strip() for run in runs)
        runs[0].kill()
        runs[0].wait()
        assert apply_retention(RetentionPolicy(keep_jobs=50, keep_hours=24), tmp_path) == []
        manifest = Job.open(killed, tmp_path).manifest
        assert manifest["state"] == "failed" and manifest["error"]["code"] == "interrupted"
        assert manifest["error"]["stage"] == "speech"
        assert Job.open(alive, tmp_path).manifest["state"] == "running"  # its process still runs it
    finally:
        for run in runs:
            run.kill()
            run.wait()


@pytest.mark.parametrize("pid", ["parent", "this"])
def test_a_reused_pid_does_not_keep_a_dead_job_running(tmp_path, pid):
    now = time.time()
    job = Job.open(make_job(tmp_path, "running", age_h=0, now=now), tmp_path)
    # the manifest names a live pid that started at another time: the test runner's parent, or
    # this very process (a restarted container's server often gets its predecessor's pid)
    owner_pid = os.getppid() if pid == "parent" else os.getpid()
    job.set_state("running", owner={**job.manifest["owner"], "pid": owner_pid, "started": -1})
    apply_retention(RetentionPolicy(keep_jobs=50, keep_hours=24), tmp_path, now=now)
    assert Job.open(job.job_id, tmp_path).manifest["error"]["code"] == "interrupted"


def test_a_job_this_process_runs_is_never_interrupted(tmp_path):
    now = time.time()
    job_id = make_job(tmp_path, "running", age_h=0, now=now)  # owner: this process, as it is
    apply_retention(RetentionPolicy(keep_jobs=50, keep_hours=24), tmp_path, now=now)
    assert Job.open(job_id, tmp_path).manifest["state"] == "running"
