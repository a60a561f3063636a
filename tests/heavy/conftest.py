"""Heavy-backend tests: run in the GPU environment (.venv-gpu, requirements-gpu.txt)
on tiny random-weight checkpoints the fixtures build in the real file layout.
Without torch they are skipped, so the core suite runs alone. The ``heavy`` marker is
registered in pyproject.toml; every test in this folder carries it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/heavy" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.heavy)


#: Audio tokens the tiny GPT may generate; each is 1024 samples at 22.05 kHz.
MAX_AUDIO_TOKENS = 40


@pytest.fixture(scope="session")
def tiny_xtts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2-layer, 64-channel XTTS with random weights, saved the way the release files are."""
    pytest.importorskip("TTS")
    import torch
    import TTS
    from TTS.tts.configs.xtts_config import XttsArgs, XttsConfig
    from TTS.tts.layers.xtts.tokenizer import VoiceBpeTokenizer
    from TTS.tts.models.xtts import Xtts

    folder = tmp_path_factory.mktemp("checkpoints") / "xtts_v2"
    folder.mkdir()
    tokenizer = json.loads((Path(TTS.__file__).parent / "tts/utils/assets/tortoise/tokenizer.json").read_text())
    next_id = max(tokenizer["model"]["vocab"].values()) + 1
    for token in ("[START]", "[en]"):
        tokenizer["model"]["vocab"][token] = next_id
        tokenizer["added_tokens"].append(
            {
                "id": next_id,
                "special": True,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
            }
        )
        next_id += 1
    (folder / "vocab.json").write_text(json.dumps(tokenizer))
    args = XttsArgs(
        gpt_layers=2,
        gpt_n_model_channels=64,
        gpt_n_heads=4,
        decoder_input_dim=64,
        gpt_max_audio_tokens=MAX_AUDIO_TOKENS,
        gpt_use_perceiver_resampler=True,
    )
    config = XttsConfig(model_args=args, languages=["en"])
    config.save_json(str(folder / "config.json"))
    torch.manual_seed(0)
    model = Xtts(config)
    model.tokenizer = VoiceBpeTokenizer(vocab_file=str(folder / "vocab.json"))
    model.init_models()
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    torch.save({}, folder / "speakers_xtts.pth")
    return folder


@pytest.fixture(scope="session")
def random_gfpgan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GFPGANv1Clean at its release size (512 px, channel multiplier 2), random weights, in the
    release layout {'params_ema': state_dict}."""
    pytest.importorskip("spandrel")
    import torch
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    network = GFPGAN(
        out_size=512,
        num_style_feat=512,
        channel_multiplier=2,
        decoder_load_path=None,
        fix_decoder=False,
        num_mlp=8,
        input_is_latent=True,
        different_w=True,
        narrow=1,
        sft_half=True,
    )
    path = tmp_path_factory.mktemp("checkpoints") / "GFPGANv1.4.pth"
    torch.save({"params_ema": network.state_dict()}, path)
    return path
