"""Motion made on a prefix of the speech (the sentences spoken so far, as the streaming
pipeline has them) agrees bit for bit with the whole track's on its final frames: blinks,
head drift, nods and the mouth continue across sentence joins exactly as if the track were
made at once. Real speech from both embedded voices, cut where sentences end."""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
import pytest

from persona_video.governor import govern
from persona_video.motion.generator import MOTION_LOOKAHEAD_S, final_frames, generate_motion
from persona_video.personas import load_persona
from persona_video.script.markup import parse_markup
from persona_video.speech import synthesize_with_intent
from persona_video.speech.timing import build_timing_map
from persona_video.types import FPS, MotionTrack, ScriptIntent, SegmentSpan, Speech, split_sentences

# sentences joined by pause markers and without, emphasis in most but not the first
SCRIPT = (
    "Solar panels turn light into electricity. Each cell is a thin slice of *silicon*. [pause 0.4] "
    "When sunlight hits it, electrons start to *move*, and that flow is a current! "
    "Wires carry it to an *inverter*, which makes it usable at home. [pause] "
    "On a clear day, a roof can power a *whole* house. Pretty neat, right?"
)
CASES = [("mkbhd", "heart"), ("ijustine", "heart"), ("mkbhd", "joe")]
SEEDS = (0, 1, 7)


@functools.cache
def _spoken(persona_id: str, voice: str) -> tuple[Speech, tuple[int, ...]]:
    """The whole track, spoken one segment list per sentence, and each sentence's end (samples)."""
    sentences = split_sentences(parse_markup(SCRIPT))
    intent = ScriptIntent(tuple(segment for sentence in sentences for segment in sentence.segments))
    speech = synthesize_with_intent(intent, load_persona(persona_id), voice=voice)
    # a sentence's audio ends (its trailing pause included) where the next one's first word starts
    ends, index = [], 0
    for sentence in sentences[:-1]:
        index += len(sentence.segments)
        next_word = next(s for s in speech.timing.spans[index:] if s.intent_type != "pause")
        ends.append(round(next_word.start_s * speech.sample_rate))
    return speech, tuple(ends)


def _prefix(speech: Speech, end_sample: int) -> Speech:
    """What the streaming pipeline has when the audio reaches end_sample: the audio so far, the
    spans and phonemes that end by then, and the timing map rebuilt on them."""
    end_s = end_sample / speech.sample_rate
    spans = [s for s in speech.timing.spans if s.end_s <= end_s]
    return dataclasses.replace(
        speech,
        audio=speech.audio[:end_sample],
        timing=build_timing_map(spans, end_s, speech.timing.fps),
        phonemes=tuple(p for p in speech.phonemes if p.end_s <= end_s),
    )


@pytest.fixture(params=CASES, ids=[f"{persona}-{voice}" for persona, voice in CASES])
def case(request) -> tuple[str, Speech, tuple[int, ...]]:
    persona_id, voice = request.param
    speech, ends = _spoken(persona_id, voice)
    return persona_id, speech, ends


def _cuts(speech: Speech, ends: tuple[int, ...]):
    """(prefix speech, final frame count) at every sentence end."""
    for end_sample in ends:
        prefix = _prefix(speech, end_sample)
        yield prefix, final_frames(end_sample / speech.sample_rate, FPS, finished=False)


def test_final_frames_counts_frames_that_end_a_lookahead_before_the_end():
    assert 1.0 <= MOTION_LOOKAHEAD_S <= 1.6
    assert final_frames(10.0, 25, finished=True) == 250
    assert final_frames(10.0, 25, finished=False) == int(round((10.0 - MOTION_LOOKAHEAD_S) * 25))
    assert final_frames(5.0, 25, finished=False) == int(round((5.0 - MOTION_LOOKAHEAD_S) * 25))
    assert final_frames(MOTION_LOOKAHEAD_S / 2, 25, finished=False) == 0
    assert final_frames(10.03, 25, finished=True) == 250  # a part-frame at the end is no frame


def test_audio_of_whole_frames_gets_every_frame_though_floats_fall_short():
    # 18.56 s of audio is 464 frames; 18.56 * 25 is 463.99999... in floats, and truncated the
    # video was a frame shorter than its audio (so the stream's segments, whose audio also holds
    # the encoder's priming, failed the player-side duration check by 3 ms)
    duration_s = 445440 / 24000
    assert int(duration_s * FPS) == 463
    assert build_timing_map([], duration_s).num_frames == 464
    assert final_frames(duration_s, FPS, finished=True) == 464
    assert build_timing_map([], 18.5599).num_frames == 463  # a part-frame is still no frame


def test_timing_map_is_local_however_long_the_silence_after_a_sentence():
    # a slow voice can leave more silence after a sentence than the lookahead: the frames in
    # it must not wait for the next sentence's first word to know their intent
    first = [SegmentSpan(0, "neutral", 0.0, "a", 0.2, 1.0), SegmentSpan(1, "emphasis", 1.0, "b", 1.0, 1.6)]
    later = [SegmentSpan(2, "neutral", 0.0, "c", 3.6, 4.0), SegmentSpan(3, "pause", 0.0, "", 4.0, 4.6)]
    whole = build_timing_map(first + later, 5.0)
    prefix = build_timing_map(first, 3.6)
    final = final_frames(3.6, FPS, finished=False)
    assert np.array_equal(prefix.frame_intents[:final], whole.frame_intents[:final])
    assert whole.frame_intents[int(2.5 * FPS)] == 0.0 and whole.frame_intents[int(1.65 * FPS)] == 1.0


def test_timing_map_of_a_prefix_agrees_on_its_final_frames(case):
    _, speech, ends = case
    assert len(ends) >= 5
    for prefix, final in _cuts(speech, ends):
        assert 0 < final < prefix.timing.num_frames
        assert np.array_equal(prefix.timing.frame_intents[:final], speech.timing.frame_intents[:final]), final


def test_motion_of_a_prefix_agrees_on_its_final_frames(case):
    persona_id, speech, ends = case
    style = load_persona(persona_id).motion
    for seed in SEEDS:
        whole = generate_motion(speech, style, seed=seed).coeffs
        tail_differs = False
        for prefix, final in _cuts(speech, ends):
            coeffs = generate_motion(prefix, style, seed=seed).coeffs
            assert coeffs.shape == (prefix.timing.num_frames, 70)
            mismatch = np.flatnonzero(np.any(coeffs[:final] != whole[:final], axis=1))
            assert mismatch.size == 0, f"seed {seed}: frames {mismatch[:5]} of {final} final frames differ"
            tail_differs |= not np.array_equal(coeffs, whole[: coeffs.shape[0]])
        # the frames past final_frames do move once more speech arrives: the lookahead is needed
        assert tail_differs


def test_streamed_track_is_the_whole_track(case):
    """What the pipeline shows: each prefix's new final frames, then the rest once speech is done."""
    persona_id, speech, ends = case
    style = load_persona(persona_id).motion
    config = load_persona(persona_id).governor_config()
    whole = generate_motion(speech, style, seed=3)
    whole_governed, _ = govern(whole, speech.timing, config)
    pieces, governed_pieces, shown = [], [], 0
    for prefix, final in _cuts(speech, ends):
        track = generate_motion(prefix, style, seed=3)
        governed, _ = govern(track, prefix.timing, config)
        pieces.append(track.coeffs[shown:final])
        governed_pieces.append(governed.coeffs[shown:final])
        shown = max(shown, final)
    pieces.append(whole.coeffs[shown:])
    governed_pieces.append(whole_governed.coeffs[shown:])
    assert final_frames(speech.duration_s, FPS, finished=True) == whole.num_frames
    streamed = np.concatenate(pieces)
    blinks = streamed[:, 5]
    assert (blinks >= 0.999).sum() >= 2, "the streamed track blinks"
    assert np.array_equal(streamed, whole.coeffs)
    assert np.array_equal(np.concatenate(governed_pieces), whole_governed.coeffs)


def test_governed_prefix_agrees_for_both_compact_layouts(case):
    persona_id, speech, ends = case
    style = load_persona(persona_id).motion
    config = load_persona(persona_id).governor_config()

    def with_crop(track: MotionTrack) -> MotionTrack:
        # a 73-dim track (SadTalker's compact layout with its crop dims), crop values per frame
        frames = np.arange(track.num_frames, dtype=np.float32)[:, None]
        crop = np.hstack([0.01 * frames, np.full_like(frames, 0.5), np.sin(frames)])
        coeffs = np.hstack([track.coeffs, crop]).astype(np.float32)
        return MotionTrack(coeffs=coeffs, fps=track.fps, layout="compact73", backend=track.backend)

    whole = generate_motion(speech, style, seed=1)
    for layout in (lambda t: t, with_crop):
        governed_whole, gains_whole = govern(layout(whole), speech.timing, config)
        for prefix, final in _cuts(speech, ends):
            governed, gains = govern(layout(generate_motion(prefix, style, seed=1)), prefix.timing, config)
            assert np.array_equal(governed.coeffs[:final], governed_whole.coeffs[:final])
            assert np.array_equal(gains[:final], gains_whole[:final])


def test_prefix_agrees_without_phonemes_and_with_the_head_still(case):
    persona_id, speech, ends = case
    style = load_persona(persona_id).motion
    mute = dataclasses.replace(speech, phonemes=())
    for still, source in ((False, mute), (True, speech)):
        whole = generate_motion(source, style, seed=5, still=still).coeffs
        for prefix, final in _cuts(source, ends):
            coeffs = generate_motion(prefix, style, seed=5, still=still).coeffs
            assert np.array_equal(coeffs[:final], whole[:final]), (still, final)
