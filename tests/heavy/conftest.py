"""Heavy-backend tests: run in the GPU environment (.venv-gpu, requirements-gpu.txt)
on tiny random-weight checkpoints the fixtures build in the real file layout.
Without torch they are skipped, so the core suite runs alone. The ``heavy`` marker is
registered in pyproject.toml; every test in this folder carries it."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/heavy" in str(item.path).replace("\\", "/"):
            item.add_marker(pytest.mark.heavy)
