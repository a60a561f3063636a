"""Speech on the real bundled voices: timing maps checked against the audio itself."""

import numpy as np
import pytest

from persona_video.errors import InputError
from persona_video.personas import load_persona
from persona_video.script import script_from_text
from persona_video.script.markup import parse_markup
from persona_video.speech import synthesize_with_intent
from persona_video.speech.timing import frame_intents
from persona_video.types import SegmentSpan

SCRIPT = (
    "So, [pause 0.45] this new *M4 Mac Mini* is *seriously* fast. [pause 0.45] It costs *$599*, [pause] and that is it."
)
FRAME_S = 0.04


def _rms(audio, rate, start_s, end_s):
    seg = audio[int(start_s * rate) : int(end_s * rate)]
    return float(np.sqrt(np.mean(seg**2))) if seg.size else 0.0


def _envelope_db(audio, rate, hop_s=0.005):
    hop = int(rate * hop_s)
    frames = audio[: len(audio) // hop * hop].reshape(-1, hop)
    return 20 * np.log10(np.sqrt((frames**2).mean(axis=1)) + 1e-9), hop_s


@pytest.fixture(scope="module", params=["heart", "joe"])
def spoken(request):
    persona = load_persona("mkbhd")
    script = script_from_text(SCRIPT, persona)
    return synthesize_with_intent(script.intent, persona, voice=request.param, seed=3), script


def test_map_covers_the_whole_wav(spoken):
    speech, script = spoken
    timing = speech.timing
    assert timing.fps == 25 and timing.num_frames == int(speech.duration_s * 25)
    assert len(timing.frame_intents) == timing.num_frames
    assert abs(timing.total_duration - len(speech.audio) / speech.sample_rate) < 1e-6
    assert len(timing.spans) == len(script.intent.segments)
    assert all(a.end_s <= b.start_s + 1e-6 for a, b in zip(timing.spans, timing.spans[1:]))
    assert timing.spans[-1].end_s <= timing.total_duration
    assert set(np.unique(np.round(timing.frame_intents, 2))) >= {0.0, 0.5, 1.0}


def test_pauses_are_silent_and_words_are_not(spoken):
    speech, _ = spoken
    audio, rate = speech.audio, speech.sample_rate
    loud = np.sqrt(np.mean(audio**2))
    for span in speech.timing.spans:
        if span.intent_type == "pause":
            assert span.end_s - span.start_s >= 0.4 - FRAME_S  # the persona's range, at least
            inner = _rms(audio, rate, span.start_s + FRAME_S, span.end_s - FRAME_S)
            assert inner < 0.05 * loud, span
        elif any(ch.isalnum() for ch in span.text):
            # within one video frame of the span there is voice
            assert _rms(audio, rate, span.start_s - FRAME_S, span.end_s + FRAME_S) > 0.3 * loud, span


def test_spans_match_where_the_words_sound(spoken):
    """After each pause the voice starts within one video frame of the next span's start."""
    speech, _ = spoken
    db, hop_s = _envelope_db(speech.audio, speech.sample_rate)
    threshold = db.max() - 35
    spans = speech.timing.spans
    checked = 0
    for pause, word in zip(spans, spans[1:]):
        if pause.intent_type != "pause" or word.intent_type == "pause":
            continue
        start = int(pause.start_s / hop_s)
        quiet = np.convolve(db[start:] < threshold, np.ones(10), mode="valid") == 10
        start += int(np.argmax(quiet))  # the previous word's tail has died away (50 ms of quiet)
        onset_index = start + int(np.argmax(db[start:] > threshold))
        assert abs(onset_index * hop_s - word.start_s) <= FRAME_S, (word, onset_index * hop_s)
        checked += 1
    assert checked >= 2


def test_emphasis_is_louder(spoken):
    speech, _ = spoken
    audio, rate = speech.audio, speech.sample_rate
    emph = [_rms(audio, rate, s.start_s, s.end_s) for s in speech.timing.spans if s.intent_type == "emphasis"]
    neutral = [
        _rms(audio, rate, s.start_s, s.end_s)
        for s in speech.timing.spans
        if s.intent_type == "neutral" and len(s.text) > 3
    ]
    assert np.mean(emph) > np.mean(neutral)


@pytest.mark.parametrize("voice", ["heart", "joe"])
def test_emphasis_slows_the_word_down(voice):
    # the same words, the middle one at intensity 0 (its own segment, no change) and 1: the
    # emphasised word takes longer, the others do not
    persona = load_persona("mkbhd")
    plain, stressed = (
        synthesize_with_intent(
            parse_markup(f"This one is *remarkably, incredibly*{{{level}}} fast today."), persona, voice=voice, seed=1
        )
        for level in (0, 1)
    )

    def length(speech, word):
        return sum(s.end_s - s.start_s for s in speech.timing.spans if s.text.strip(" .") == word)

    word = "remarkably, incredibly"
    # 15 % slower at full intensity; durations come in whole model frames (12 and 25 ms)
    assert length(plain, word) > 1.0
    assert length(stressed, word) > 1.07 * length(plain, word)
    total_plain = plain.timing.spans[-1].end_s - plain.timing.spans[0].start_s
    total_stressed = stressed.timing.spans[-1].end_s - stressed.timing.spans[0].start_s
    assert total_stressed - total_plain < 1.5 * (length(stressed, word) - length(plain, word)) + 0.05


@pytest.mark.parametrize("voice", ["heart", "joe"])
def test_same_seed_same_audio_other_seed_other_take(voice):
    # both voices draw noise (Piper inside its graph); the request's seed decides it
    persona = load_persona("mkbhd")
    intent = script_from_text("This is *really* quick. [pause] Try it.", persona).intent
    first, again, other = (synthesize_with_intent(intent, persona, voice=voice, seed=s) for s in (5, 5, 6))
    assert np.array_equal(first.audio, again.audio)
    assert np.array_equal(first.timing.frame_intents, again.timing.frame_intents)
    assert not np.array_equal(first.audio, other.audio)


def test_persona_pace_and_pauses_differ():
    text = "So, here is the point. It is fast, and it is small."
    calm_persona, lively_persona = load_persona("mkbhd"), load_persona("ijustine")
    calm = synthesize_with_intent(script_from_text(text, calm_persona).intent, calm_persona)
    lively = synthesize_with_intent(script_from_text(text, lively_persona).intent, lively_persona)
    assert lively.duration_s < calm.duration_s
    calm_pauses = [s.end_s - s.start_s for s in calm.timing.spans if s.intent_type == "pause"]
    lively_pauses = [s.end_s - s.start_s for s in lively.timing.spans if s.intent_type == "pause"]
    assert np.mean(lively_pauses) < np.mean(calm_pauses)


def test_seed_timing_numbers():
    spans = [
        SegmentSpan(0, "pause", 0.0, "", 0.0, 0.5),
        SegmentSpan(1, "neutral", 0.0, "a", 0.5, 1.0),
        SegmentSpan(2, "emphasis", 1.0, "b", 1.0, 2.0),
        SegmentSpan(3, "neutral", 0.0, "c", 2.0, 2.5),
    ]
    values = frame_intents(spans, int(2.5 * 25))
    assert len(values) == 62
    assert values[3] == 0.0 and values[20] == 0.5 and values[40] == 1.0 and values[58] == 0.5
    assert np.any((values > 0.75) & (values < 0.9))  # the ramp between 0.5 and 1.0


def test_bad_voice_and_empty_script():
    persona = load_persona("mkbhd")
    intent = script_from_text("Hello.", persona).intent
    with pytest.raises(InputError, match="voice"):
        synthesize_with_intent(intent, persona, voice="morgan")
    with pytest.raises(InputError, match="backend"):
        synthesize_with_intent(intent, persona, backend="espeak")


def test_piper_noise_grows_for_a_slow_phrase_without_changing_the_take(monkeypatch):
    from persona_video.speech import piper_graph
    from persona_video.speech.voices import get_voice

    voice = get_voice("joe")
    ids = [1, 0] + [voice._piper.config.phoneme_id_map["a"][0], 0] * 40 + [2]
    noise, lengths = (0.667, 0.8), np.full(len(ids), 3.0)
    audio, samples = voice._model.run(ids, noise, lengths, seed=4)
    monkeypatch.setattr(piper_graph, "_FLOW_FRAMES_PER_ID", 1)  # too little noise: the first try fails
    retried, retried_samples = voice._model.run(ids, noise, lengths, seed=4)
    assert np.array_equal(audio, retried) and np.array_equal(samples, retried_samples)
    assert samples.sum() == len(audio) > 256 * len(ids)  # the phrase did need more than 1 frame per id


def test_a_piper_model_of_another_shape_is_refused_with_what_to_do(tmp_path):
    import onnx
    from onnx import TensorProto, helper

    from persona_video.speech import piper_graph

    # a real ONNX model with no noise draws and no durations: not a Piper VITS voice
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "not-piper",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    path = tmp_path / "voice.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(ValueError, match="is not a Piper VITS voice as expected"):
        piper_graph.load_seeded(str(path), 256)
