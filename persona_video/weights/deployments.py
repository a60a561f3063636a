"""``doctor``, per deployment kind: for a CPU machine, a GPU machine (``.venv-gpu`` or the Docker
image) and a ZeroGPU Space, what is ready, what is missing, and the one command that fixes each
missing thing. Reads the environment and the disk only, like the rest of ``doctor``.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from persona_video.weights.registry import GROUPS, SADTALKER_DIR_ENV, SADTALKER_PYTHON_ENV, weight_state
from persona_video.weights.runtime import cuda_device_name, sadtalker_python

#: The commit the Docker image builds SadTalker from (its ARG SADTALKER_COMMIT).
SADTALKER_COMMIT = "cd4c0465ae0b54a6f85af57f5c65fec9fe23e7f8"
SADTALKER_CLONE = (
    "git clone https://github.com/OpenTalker/SadTalker.git ~/SadTalker && "
    f"git -C ~/SadTalker checkout {SADTALKER_COMMIT} (then set {SADTALKER_DIR_ENV}=~/SadTalker)"
)


@dataclass(frozen=True)
class Need:
    """One thing a deployment needs: what, whether it is here, and the one command that fixes it."""

    what: str
    ready: bool
    detail: str = ""
    fix: str = ""


@dataclass(frozen=True)
class Deployment:
    """A deployment kind ("cpu" | "gpu" | "zerogpu") and what it needs here."""

    kind: str
    title: str
    needs: tuple[Need, ...]
    note: str = ""

    @property
    def ready(self) -> bool:
        return all(need.ready for need in self.needs)


def _packages(what: str, modules: tuple[str, ...], fix: str) -> Need:
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        return Need(what, False, f"missing Python package(s) {', '.join(missing)}", fix)
    return Need(what, True, "installed")


def _weights(group: str, what: str, root: Path | None, env: Mapping[str, str]) -> Need:
    states = [weight_state(w, root, env) for w in GROUPS[group] if w.required]
    absent = [s for s in states if s.state in ("missing", "wrong size")]
    if absent:
        names = ", ".join(Path(s.weight.relative_path).name for s in absent)
        agree = next((w.agreement_env for w in GROUPS[group] if w.agreement_env), None)
        command = f"python -m persona_video fetch {group}"
        return Need(what, False, f"{names} {absent[0].state}", f"{agree}=1 {command}" if agree else command)
    unverified = [s for s in states if s.state == "unverified"]
    where = states[0].path.parent if states else ""
    if unverified:
        return Need(what, True, f"present in {where}, not yet verified", f"python -m persona_video fetch {group}")
    return Need(what, True, f"present and verified in {where}")


def _sadtalker_checkout(env: Mapping[str, str]) -> list[Need]:
    value = env.get(SADTALKER_DIR_ENV, "").strip()
    checkout = Path(value).expanduser() if value else None
    if checkout is None or not (checkout / "inference.py").is_file():
        detail = f"{SADTALKER_DIR_ENV} is not set" if checkout is None else f"{checkout} is not a SadTalker checkout"
        return [Need("SadTalker checkout", False, detail, SADTALKER_CLONE)]
    needs = [Need("SadTalker checkout", True, str(checkout))]
    chosen = env.get(SADTALKER_PYTHON_ENV, "").strip()
    python = Path(chosen).expanduser() if chosen else sadtalker_python(checkout)
    if python.is_file() and (chosen or python.parent.parent.parent == checkout):
        needs.append(Need("SadTalker's environment", True, str(python)))
        return needs
    # without one, SadTalker would run in this interpreter, which lacks its packages
    fix = (
        f"python3.11 -m venv {checkout}/venv && {checkout}/venv/bin/pip install -r requirements-sadtalker.txt "
        f"&& {checkout}/venv/bin/pip install --no-deps gfpgan==1.3.8 basicsr-fixed==1.4.2"
    )
    detail = f"{chosen} does not exist" if chosen else f"no venv in {checkout} and {SADTALKER_PYTHON_ENV} is not set"
    needs.append(Need("SadTalker's environment", False, detail, fix))
    return needs


def _gpu(cuda: str | None) -> Need:
    if cuda:
        return Need("CUDA GPU", True, cuda)
    return Need("CUDA GPU", False, "none visible", "run on a machine with an NVIDIA GPU: docker run --gpus all ...")


def deployment_report(env: Mapping[str, str] | None = None, root: Path | None = None) -> list[Deployment]:
    """What each deployment kind needs, and its state here, in the order a user would grow into them."""
    env = os.environ if env is None else env
    core = _packages("core packages", ("hibari", "piper", "mediapipe", "gradio"), "bash scripts/setup.sh")
    heavy_packages = _packages("GPU packages (torch, coqui-tts, spandrel)", ("torch", "TTS", "spandrel"), "")
    cpu = Deployment(
        "cpu",
        "CPU machine (./run.sh): embedded voices and animator, the local script model",
        (core, _weights("llm", "script model", root, env)),
    )
    cuda = cuda_device_name() if heavy_packages.ready else None
    gpu = Deployment(
        "gpu",
        "GPU machine (.venv-gpu, or the Docker image): XTTS v2, SadTalker, GFPGAN",
        (
            Need(heavy_packages.what, heavy_packages.ready, heavy_packages.detail, "bash scripts/setup-gpu.sh"),
            _gpu(cuda),
            _weights("xtts", "XTTS v2 weights", root, env),
            _weights("sadtalker", "SadTalker weights", root, env),
            _weights("gfpgan", "GFPGAN weights", root, env),
            *_sadtalker_checkout(env),
        ),
        note="the Docker image has the GPU packages, SadTalker and its environment, and fetches the weights at "
        "its first start: docker build -t persona-video . && docker run --gpus all -p 7860:7860 "
        "-v persona-data:/data -e COQUI_TOS_AGREED=1 persona-video",
    )
    zerogpu = Deployment(
        "zerogpu",
        "ZeroGPU Space: XTTS v2 and GFPGAN on a lent GPU; motion is the embedded animator",
        (
            _packages("spaces package", ("spaces",), "pip install spaces (a ZeroGPU Space comes with it)"),
            Need(
                heavy_packages.what,
                heavy_packages.ready,
                heavy_packages.detail,
                "add the line `-r requirements-gpu.txt` to the Space's requirements.txt",
            ),
            _weights("xtts", "XTTS v2 weights (preload_from_hub)", root, env),
            _weights("llm", "script model (preload_from_hub)", root, env),
            _weights("gfpgan", "GFPGAN weights (fetched at start)", root, env),
        ),
        note="SadTalker runs in its own process, which ZeroGPU cannot lend a GPU to; the front matter's "
        "preload_from_hub brings the Hub files at build time; set the Space variable "
        "PERSONA_VIDEO_FETCH_ON_START=gfpgan for GFPGAN",
    )
    return [cpu, gpu, zerogpu]


def format_deployments(deployments: list[Deployment]) -> str:
    """Each deployment kind: ready or not, then one line per need with its fix."""
    lines = ["deployments (what each kind needs here, and the command that fixes what is missing):"]
    for deployment in deployments:
        lines.append(f"{deployment.kind:<8} {'ready' if deployment.ready else 'not ready'}: {deployment.title}")
        width = max(len(need.what) for need in deployment.needs)
        for need in deployment.needs:
            mark = "ok     " if need.ready else "missing"
            line = f"  {mark}  {need.what:<{width}}  {need.detail}"
            if need.fix and not need.ready:
                line += f"  fix: {need.fix}"
            lines.append(line)
        if deployment.note:
            lines.append(f"  note: {deployment.note}")
    return "\n".join(lines)
