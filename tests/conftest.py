"""Fixtures shared by several test files."""

from __future__ import annotations

from pathlib import Path

import pytest

from persona_video.script.random_gguf import write_tiny_model


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight Qwen2 GGUF (byte-level BPE vocabulary, ChatML template) that the
    real llama.cpp loads: the local script model's plumbing without a download."""
    return write_tiny_model(tmp_path_factory.mktemp("llm") / "tiny-random.gguf", seed=0)
