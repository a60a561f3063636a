"""Speech sentence by sentence on the real bundled voices: the stream gives the same
track as speaking the script at once, its chunks join without a gap or a click, and
the timing map built up chunk by chunk matches the audio at every join."""

import numpy as np
import pytest

from persona_video.errors import InputError
from persona_video.personas import load_persona
from persona_video.script.markup import parse_markup
from persona_video.speech import JOIN_S, LEAD_IN_S, PEAK, TAIL_S, SpeechStream, synthesize_with_intent
from persona_video.speech.stream import AAC_FRAME_SAMPLES, MAX_AUDIO_OVERHANG_S, closing_silence
from persona_video.types import split_sentences

# a drawn pause, two sentences with no pause between them, a marked pause, a question
SCRIPT = (
    "So, here is the point. [pause] The new *M4 Mac Mini* is *seriously* fast! "
    "It costs $599. [pause 0.8] Would you buy one?"
)
FPS = 25
SEED = 7


@pytest.fixture(scope="module", params=[(v, p) for v in ("heart", "joe") for p in ("mkbhd", "ijustine")])
def streamed(request):
    """(stream, chunks, prefix speeches after each chunk, batch speech) for one voice and persona."""
    voice, persona_id = request.param
    persona = load_persona(persona_id)
    intent = parse_markup(SCRIPT)
    stream = SpeechStream(persona, voice=voice, seed=SEED)
    chunks, prefixes = [], []
    for sentence in split_sentences(intent):
        chunks.append(stream.add(sentence))
        prefixes.append(stream.speech())
    chunks.append(stream.finish())
    prefixes.append(stream.speech())
    batch = synthesize_with_intent(intent, persona, voice=voice, seed=SEED)
    return stream, chunks, prefixes, batch


def _speech_rms(speech):
    """RMS of the audio where words are."""
    rate = speech.sample_rate
    parts = [
        speech.audio[int(s.start_s * rate) : int(s.end_s * rate)]
        for s in speech.timing.spans
        if s.intent_type != "pause" and any(ch.isalnum() for ch in s.text)
    ]
    return float(np.sqrt(np.mean(np.concatenate(parts) ** 2)))


def test_streamed_chunk_by_chunk_is_the_batch_track(streamed):
    stream, chunks, prefixes, batch = streamed
    final = prefixes[-1]
    assert len(chunks) == 5  # four sentences and the closing silence
    assert np.array_equal(np.concatenate([c.audio for c in chunks]), batch.audio)
    assert np.array_equal(final.audio, batch.audio)
    assert final.timing.spans == batch.timing.spans
    assert final.phonemes == batch.phonemes
    assert np.array_equal(final.timing.frame_intents, batch.timing.frame_intents)
    assert tuple(s for c in chunks for s in c.spans) == batch.timing.spans
    assert tuple(p for c in chunks for p in c.phonemes) == batch.phonemes
    assert [s.index for s in batch.timing.spans] == list(range(len(batch.timing.spans)))
    assert (final.backend, final.voice, final.sample_rate) == (batch.backend, batch.voice, batch.sample_rate)


def test_chunks_abut_and_begin_and_end_on_silence(streamed):
    stream, chunks, prefixes, batch = streamed
    rate = stream.sample_rate
    assert chunks[0].start_sample == 0
    assert all(b.start_sample == a.end_sample for a, b in zip(chunks, chunks[1:]))  # no gap, no overlap
    assert chunks[-1].end_sample == stream.samples == len(batch.audio)
    assert [p.timing.total_duration for p in prefixes] == [c.end_sample / rate for c in chunks]
    assert not chunks[0].audio[: int(LEAD_IN_S * rate)].any()
    assert all(not c.audio[: int(JOIN_S * rate)].any() for c in chunks[1:-1])
    # the closing silence: at least TAIL_S, the track ending on a whole frame, with its AAC
    # (priming and last frame's padding) running at most MAX_AUDIO_OVERHANG_S past the video
    assert int(TAIL_S * rate) <= len(chunks[-1].audio) < int(TAIL_S * rate) + rate and not chunks[-1].audio.any()
    frames = batch.timing.num_frames
    assert frames * rate == len(batch.audio) * FPS
    overhang = AAC_FRAME_SAMPLES + (-len(batch.audio)) % AAC_FRAME_SAMPLES
    assert overhang <= MAX_AUDIO_OVERHANG_S * rate
    assert chunks[-1].spans == () and chunks[-1].phonemes == ()


@pytest.mark.parametrize("rate", [24000, 22050, 44100])
def test_the_closing_silence_ends_the_track_on_a_frame_the_audio_codec_fits(rate):
    for samples in range(rate, 4 * rate, 997):  # every remainder, near enough
        tail = closing_silence(samples, rate)
        total = samples + tail
        assert tail >= int(TAIL_S * rate) and tail < int(TAIL_S * rate) + rate
        assert (total * FPS) % rate == 0  # a whole number of frames
        assert AAC_FRAME_SAMPLES + (-total) % AAC_FRAME_SAMPLES <= MAX_AUDIO_OVERHANG_S * rate


def test_no_click_at_any_join(streamed):
    """At every join the samples either side are (near) zero and the 10 ms around it are
    silence: measured at most 3e-4 of the speech's RMS and a step of 0 across the join,
    where speech moves by ~0.1 from sample to sample at its 99th percentile."""
    stream, chunks, _, batch = streamed
    audio, rate = batch.audio, batch.sample_rate
    speech_rms = _speech_rms(batch)
    steps = np.abs(np.diff(audio))
    speech_step = float(np.percentile(steps[steps > 0], 99))
    assert speech_rms > 0.05 and speech_step > 0.05  # there is speech to compare with
    half = int(0.005 * rate)
    for chunk in chunks[1:]:
        join = chunk.start_sample
        step = abs(float(audio[join]) - float(audio[join - 1]))
        around = float(np.sqrt(np.mean(audio[join - half : join + half] ** 2)))
        assert step < 0.01 * speech_step, (join, step)
        assert around < 0.01 * speech_rms, (join, around / speech_rms)


def test_timing_map_matches_the_audio_at_every_join(streamed):
    stream, chunks, prefixes, batch = streamed
    rate, final = stream.sample_rate, prefixes[-1].timing
    for chunk, prefix in zip(chunks, prefixes):
        samples_s = chunk.end_sample / rate
        timing = prefix.timing
        # the prefix map has the frames of the audio so far, within one frame of its end
        assert timing.num_frames == int(samples_s * FPS) == len(timing.frame_intents)
        assert 0 <= samples_s - timing.num_frames / FPS < 1 / FPS
        assert len(prefix.audio) == chunk.end_sample
        assert timing.spans == final.spans[: len(timing.spans)]
        # the chunk's spans lie in its own audio
        start_s = chunk.start_sample / rate
        assert all(start_s <= s.start_s <= s.end_s <= samples_s for s in chunk.spans)
    for before, after in zip(chunks[:-2], chunks[1:-1]):
        join_s = after.start_sample / rate
        last, first = before.spans[-1], after.spans[0]
        if last.intent_type == "pause":  # a pause after a sentence lasts to the join
            assert last.end_s == join_s
        # the next sentence's first word is within one frame of the join (JOIN_S after it)
        assert 0 <= first.start_s - join_s <= 1 / FPS
        assert abs(int(first.start_s * FPS) - int(join_s * FPS)) <= 1
        assert int(last.end_s * FPS) <= int(join_s * FPS)


def test_prefix_frames_are_final_up_to_the_last_word(streamed):
    """Motion can run on each prefix map: its frames up to the last word never change;
    only the frames of the sentence's closing silence may (up to 5 measured)."""
    stream, chunks, prefixes, _ = streamed
    final = prefixes[-1].timing.frame_intents
    for prefix in prefixes[:-2]:
        timing = prefix.timing
        last_word_end_s = max(s.end_s for s in timing.spans if s.intent_type != "pause")
        stable = int(last_word_end_s * FPS) - 1  # the frame before the ramp out of the last word
        assert np.array_equal(timing.frame_intents[:stable], final[:stable])


@pytest.mark.parametrize("voice", ["heart", "joe"])
def test_a_pause_between_sentences_lands_between_them_with_its_length(voice):
    persona = load_persona("mkbhd")
    speech = synthesize_with_intent(parse_markup("First sentence. [pause 0.8] Second one."), persona, voice=voice)
    spans, rate = speech.timing.spans, speech.sample_rate
    assert [s.intent_type for s in spans] == ["neutral", "pause", "neutral"]
    first, pause, second = spans
    # the pause span: from the first sentence's last word to the join, 0.8 s of it
    assert first.end_s == pause.start_s and pause.end_s <= second.start_s
    assert abs((pause.end_s - pause.start_s) - 0.8) < 1 / rate + 1e-9
    assert second.start_s - pause.end_s == pytest.approx(JOIN_S, abs=1 / rate)
    # and in the audio: silence all through the pause, at least 0.8 s of it (below -50 dBFS),
    # and the voice back within one frame of the second sentence's span
    quiet = speech.audio[int(pause.start_s * rate) : int(second.start_s * rate)]
    assert float(np.sqrt(np.mean(quiet**2))) < 0.01 * _speech_rms(speech)
    voiced = np.flatnonzero(np.abs(speech.audio) > 0.003)
    assert np.max(np.diff(voiced)) / rate >= 0.8
    resumes_s = voiced[voiced >= int(pause.end_s * rate)][0] / rate
    assert abs(resumes_s - second.start_s) <= 1 / FPS


@pytest.mark.parametrize("voice", ["heart", "joe"])
def test_the_first_sentence_sets_the_level_and_nothing_exceeds_peak(voice):
    """The same second sentence after a quiet and after a loud first sentence: the same
    take (same draws), at the first sentence's gain, and never above PEAK."""
    persona = load_persona("mkbhd")
    quiet_first, loud_first = parse_markup("Here is the point."), parse_markup("*Here is the point.*")
    second = parse_markup("It is small, and it is quiet.")
    louder_second = parse_markup("*It is really, really loud!*")

    def speak(*sentences):
        stream = SpeechStream(persona, voice=voice, seed=SEED)
        return stream, [stream.add(s) for s in sentences]

    quiet, (quiet_1, quiet_2) = speak(quiet_first, second)
    loud, (loud_1, loud_2) = speak(loud_first, second)
    for chunk in (quiet_1, loud_1):
        assert float(np.max(np.abs(chunk.audio))) == pytest.approx(PEAK, abs=1e-6)
    assert loud.gain < quiet.gain  # the emphasised first sentence is louder before levelling
    # the second sentence is one take: after the loud first sentence it is at that gain
    # (below PEAK), so the take itself is loud_2 / loud.gain; after the quiet one it is at
    # the quiet one's gain, or at PEAK on its own where that gain would take it past PEAK
    assert float(np.max(np.abs(loud_2.audio))) < PEAK
    take = loud_2.audio / loud.gain
    expected = take * min(quiet.gain, PEAK / float(np.max(np.abs(take))))
    assert np.allclose(quiet_2.audio, expected, rtol=1e-4, atol=1e-6)
    # a later sentence the first's gain would push past PEAK is brought to PEAK on its own
    stream, (_, loud_later) = speak(quiet_first, louder_second)
    peak = float(np.max(np.abs(loud_later.audio)))
    assert peak == pytest.approx(PEAK, abs=1e-6)
    assert stream.gain == quiet.gain
    full = stream.speech().audio
    assert float(np.max(np.abs(full))) <= PEAK + 1e-6


def test_a_finished_stream_takes_no_more_and_an_empty_one_cannot_finish():
    persona = load_persona("mkbhd")
    stream = SpeechStream(persona, voice="heart")
    with pytest.raises(InputError, match="no words to speak"):
        stream.finish()
    stream.add(parse_markup("Hello there."))
    stream.finish()
    with pytest.raises(RuntimeError, match="start a new one"):
        stream.add(parse_markup("Again."))
    with pytest.raises(InputError, match="speed"):
        SpeechStream(persona, voice="heart", speed=3.0)


def test_a_chunk_whose_voice_ends_loud_is_faded_to_silence():
    """XTTS trims its takes at -40 dB, not at silence: such an end is faded out over 5 ms;
    an end that is already silence (the embedded voices fade their own) is left alone."""
    from persona_video.speech.stream import EDGE_FADE_S, _quiet_end
    from persona_video.speech.voices import get_voice

    voice = get_voice("heart")
    phrase = voice.synthesize_groups([voice.phonemize("Hello there, my friend.")], [1.0], seed=1)
    assert phrase.audio[-1] == 0.0
    assert np.array_equal(_quiet_end(phrase.audio.copy(), voice.sample_rate), phrase.audio)
    loudest = int(np.argmax(np.abs(phrase.audio)))
    cut = phrase.audio[: loudest + 1].copy()  # ends on its loudest sample
    faded = _quiet_end(cut.copy(), voice.sample_rate)
    fade = int(EDGE_FADE_S * voice.sample_rate)
    assert abs(cut[-1]) > 0.1 and faded[-1] == 0.0
    assert np.array_equal(faded[:-fade], cut[:-fade])
    assert np.max(np.abs(np.diff(faded[-fade:]))) < np.max(np.abs(np.diff(cut)))
