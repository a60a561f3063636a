"""Persona Video: a prompt and a presenter style in, a talking-head explainer video out.

Stages (one module each): script -> speech -> motion -> governor -> render -> encode;
``pipeline`` runs them in order and yields an event per stage.
"""

import os

# The pipeline brings its own parallelism (render threads, the speech thread, ffmpeg, worker
# processes). OpenBLAS's threads only spin between the renderer's tiny matrix products: one
# render thread kept both cores busy (measured: CPU time twice the wall time), taking the core
# x264 and the other render thread need. So numpy's BLAS gets one thread unless the environment
# says otherwise; set here, before anything of the package imports numpy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

__version__ = "0.1.0"
