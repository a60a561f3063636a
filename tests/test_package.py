"""What importing the package sets up for the whole process."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

_PROBE = (
    "import json, persona_video, numpy, scipy.sparse; from threadpoolctl import threadpool_info; "
    "print(json.dumps([(i['internal_api'], i['num_threads']) for i in threadpool_info() if i['user_api'] == 'blas']))"
)


def _blas_threads(env: dict[str, str]) -> list[tuple[str, int]]:
    out = subprocess.run([sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, check=True)
    return [tuple(pair) for pair in json.loads(out.stdout)]


def test_numpy_blas_gets_one_thread_so_idle_blas_threads_do_not_spin_on_the_renderers_cores():
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    threads = _blas_threads(env)
    assert threads and all(count == 1 for _, count in threads), threads


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="needs two cores to ask for two BLAS threads")
def test_a_blas_thread_count_the_environment_asks_for_is_kept():
    env = {k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}
    env["OPENBLAS_NUM_THREADS"] = "2"
    threads = _blas_threads(env)
    assert any(count == 2 for _, count in threads), threads
