"""XTTS v2 at its release size loads through our backend: the release config.json's model_args
(a 30-layer, 1024-channel GPT with the perceiver resampler, the HiFi-GAN decoder, 17 languages),
random weights, the release file layout. Speaking with it is measured by hand, not here (random
weights never emit the stop token: 605 audio tokens take about 11 minutes on two CPU cores;
see the README's "Deploy on a GPU")."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile

torch = pytest.importorskip("torch")
pytest.importorskip("TTS")

from persona_video.speech import xtts  # noqa: E402

#: model_args of coqui/XTTS-v2's config.json (the architecture; paths and training fields left out).
RELEASE_MODEL_ARGS = {
    "gpt_batch_size": 1,
    "enable_redaction": False,
    "kv_cache": True,
    "num_chars": 255,
    "gpt_max_audio_tokens": 605,
    "gpt_max_text_tokens": 402,
    "gpt_max_prompt_tokens": 70,
    "gpt_layers": 30,
    "gpt_n_model_channels": 1024,
    "gpt_n_heads": 16,
    "gpt_number_text_tokens": 6681,
    "gpt_num_audio_tokens": 1026,
    "gpt_start_audio_token": 1024,
    "gpt_stop_audio_token": 1025,
    "gpt_code_stride_len": 1024,
    "gpt_use_masking_gt_prompt_approach": True,
    "gpt_use_perceiver_resampler": True,
    "input_sample_rate": 22050,
    "output_sample_rate": 24000,
    "output_hop_length": 256,
    "decoder_input_dim": 1024,
    "d_vector_dim": 512,
    "cond_d_vector_in_each_upsampling_layer": True,
    "duration_const": 102400,
}
RELEASE_LANGUAGES = "en es fr de it pt pl tr ru nl cs ar zh-cn hu ko ja hi".split()


@pytest.fixture(scope="module")
def full_xtts(tmp_path_factory: pytest.TempPathFactory, tiny_xtts: Path) -> Path:
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    folder = tmp_path_factory.mktemp("checkpoints") / "xtts_v2"
    folder.mkdir()
    # the release vocabulary is not at hand: coqui-tts's own tokenizer, with [START] and [en] (as the tiny model)
    (folder / "vocab.json").write_text((tiny_xtts / "vocab.json").read_text())
    config = XttsConfig(
        model_args=XttsArgs(**RELEASE_MODEL_ARGS),
        languages=RELEASE_LANGUAGES,
        temperature=0.75,
        length_penalty=1.0,
        repetition_penalty=5.0,
        top_k=50,
        top_p=0.85,
        gpt_cond_len=30,
        gpt_cond_chunk_len=4,
        max_ref_len=30,
        sound_norm_refs=False,
    )
    config.save_json(str(folder / "config.json"))
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    torch.save({}, folder / "speakers_xtts.pth")
    return folder


def test_release_size_xtts_loads_and_listens_to_a_reference(full_xtts: Path, tmp_path: Path) -> None:
    assert json.loads((full_xtts / "config.json").read_text())["model_args"]["gpt_layers"] == 30
    assert (full_xtts / "model.pth").stat().st_size > 1.7e9  # the release model.pth is 1.87 GB
    backend = xtts.XTTSBackend(full_xtts, device="cpu", language="de")
    assert backend.sample_rate == 24000
    model = xtts._MODELS[(full_xtts.resolve(), "cpu")].model
    assert sum(p.numel() for p in model.parameters()) > 440e6
    reference = tmp_path / "voice.wav"
    t = np.arange(5 * 22050) / 22050
    soundfile.write(str(reference), (0.3 * np.sin(2 * np.pi * 160 * t)).astype(np.float32), 22050)
    gpt_latent, speaker_embedding = backend._conditioning(reference)
    assert tuple(gpt_latent.shape) == (1, 32, 1024)  # the perceiver's 32 latents of the GPT's width
    assert tuple(speaker_embedding.shape) == (1, 512, 1)  # d_vector_dim
