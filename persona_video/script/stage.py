"""The script stage as the pipeline calls it: the writer chosen once (and why) before any work,
and the finished script saved in the job folder."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..types import BackendChoice, Request, Script
from . import plan_writer

if TYPE_CHECKING:
    from ..jobs.folder import Job


def choose_writer(request: Request) -> BackendChoice:
    """The writer that will run and why ("given" when the request carries its own script), with its
    ``WriterPlan`` as the target; InputError for an unknown name, BackendUnavailable (with the fix)
    for a writer asked for by name that cannot run."""
    plan = plan_writer(request.script_backend)
    if request.script is not None:
        return BackendChoice("given", "the request carries its own script")
    return BackendChoice(plan.name, plan.why, plan)


def save_script(job: Job, script: Script) -> None:
    """script.txt (the canonical markup) and script.json (backend, model, notice, segments)."""
    job.write_text("script.txt", script.markup + "\n")
    job.write_json(
        "script.json",
        {
            "backend": script.backend,
            "model": script.model,
            "notice": script.notice,
            "markup": script.markup,
            **script.intent.to_dict(),
        },
    )
