"""Reading a job's finished stages back from its folder, so work picked up again after the
process running it died (a worker killed mid-job) goes on from the last finished stage
instead of redoing it, and so a page following a job run elsewhere gets the same typed
results as one that ran it.

A stage counts as finished when the manifest records it and every file it writes is there
(each is written atomically, before the manifest names the stage), and every stage before
it is finished too.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..governor import GovernorConfig
from ..jobs.folder import Job
from ..types import IntentTimingMap, MotionTrack, PhonemeTiming, Script, ScriptIntent, Speech, layout_for_dims

#: The files each stage leaves in the job folder, in pipeline order.
STAGE_FILES: dict[str, tuple[str, ...]] = {
    "script": ("script.txt", "script.json"),
    "speech": ("audio.wav", "timing.json", "speech.json"),
    "motion": ("motion_raw.npy",),
    "governor": ("motion_governed.npy", "gains.json"),
    "video": ("video.mp4", "captions.vtt"),
}


def finished_stages(job: Job) -> tuple[str, ...]:
    """The stages, in order from the first, that the manifest records and whose files are all there."""
    recorded = job.manifest.get("stages", {})
    done: list[str] = []
    for stage, names in STAGE_FILES.items():
        if stage not in recorded or not all(job.has(name) for name in names):
            break
        done.append(stage)
    return tuple(done)


def recorded(job: Job, stage: str) -> tuple[str, float]:
    """(backend, wall seconds) the manifest recorded for a finished stage."""
    info = job.manifest.get("stages", {}).get(stage, {})
    return str(info.get("backend", "")), float(info.get("seconds", 0.0))


def restore_script(job: Job) -> Script:
    saved = job.read_json("script.json")
    return Script(
        markup=saved["markup"],
        intent=ScriptIntent.from_dict(saved),
        backend=str(saved.get("backend", "")),
        notice=str(saved.get("notice", "")),
        model=str(saved.get("model", "")),
    )


def restore_speech(job: Job) -> Speech:
    """The speech as the stage made it: 16-bit audio read back as float32 (num_samples,), its
    timing map and phoneme timings (so motion comes out as in an uninterrupted run)."""
    from ..wav import read_wav

    audio, sample_rate = read_wav(job.path("audio.wav"))
    saved = job.read_json("speech.json")
    return Speech(
        audio=audio,
        sample_rate=sample_rate,
        timing=IntentTimingMap.from_dict(job.read_json("timing.json")),
        phonemes=tuple(PhonemeTiming(str(p), float(start), float(end)) for p, start, end in saved["phonemes"]),
        backend=str(saved["backend"]),
        voice=str(saved["voice"]),
        notice=str(saved.get("notice", "")),
    )


def _track(job: Job, name: str, fps: int) -> MotionTrack:
    coeffs = job.read_array(name).astype(np.float32)
    backend = job.manifest.get("stages", {}).get("motion", {}).get("backend", "embedded")
    reference = np.asarray(job.manifest.get("motion_reference", np.zeros(coeffs.shape[1])), dtype=np.float32)
    return MotionTrack(
        coeffs=coeffs, fps=fps, layout=layout_for_dims(coeffs.shape[1]), reference=reference, backend=backend
    )


def restore_motion(job: Job) -> MotionTrack:
    """The raw motion track, (T, D) float32 coefficients."""
    return _track(job, "motion_raw.npy", int(job.read_json("timing.json")["fps"]))


def restore_governed(job: Job) -> tuple[MotionTrack, np.ndarray, GovernorConfig]:
    """(governed track, (T,) per-frame gains, the config that made them), as the governor stage returned."""
    saved = job.read_json("gains.json")
    governed = _track(job, "motion_governed.npy", int(job.read_json("timing.json")["fps"]))
    return governed, np.asarray(saved["gains"], dtype=np.float32), GovernorConfig.from_dict(saved["config"])


def restore_result(job: Job, stage: str) -> Any:
    """A finished stage's result as the pipeline's StageEvent carries it (the video: its path;
    done: the job)."""
    if stage == "script":
        return restore_script(job)
    if stage == "speech":
        return restore_speech(job)
    if stage == "motion":
        return restore_motion(job)
    if stage == "governor":
        return restore_governed(job)
    if stage == "video":
        return Path(job.path("video.mp4"))
    return job


def load_for_rerender(job: Job) -> tuple[np.ndarray, int, IntentTimingMap, MotionTrack]:
    """A finished job's audio ((num_samples,) float32 and its rate), timing map and raw motion."""
    from ..wav import read_wav

    audio, sample_rate = read_wav(job.path("audio.wav"))
    timing = IntentTimingMap.from_dict(job.read_json("timing.json"))
    return audio, sample_rate, timing, _track(job, "motion_raw.npy", timing.fps)
