"""Exceptions with the fix in the message. Only the surfaces (CLI, app, API)
turn them into exit codes, gr.Error or HTTP statuses."""

from __future__ import annotations


class PersonaVideoError(Exception):
    """Base class: every error the pipeline raises on purpose."""

    #: HTTP status the API answers with.
    status_code = 500


class InputError(PersonaVideoError, ValueError):
    """The request itself is wrong (bad prompt, markup, upload): the user fixes it."""

    status_code = 422


class NotFoundError(PersonaVideoError, LookupError):
    """An unknown persona, job or file name."""

    status_code = 404


class BackendUnavailable(PersonaVideoError):
    """A backend asked for by name cannot run here (missing weights, package, GPU)."""

    status_code = 503


class StageError(PersonaVideoError):
    """A stage failed while running (ffmpeg error, model failure)."""

    status_code = 500

    def __init__(self, stage: str, message: str) -> None:
        super().__init__(f"{stage} stage failed: {message}")
        self.stage = stage


class ServiceError(PersonaVideoError):
    """A remote service (Gemini, an OpenAI-compatible server) failed: timeout,
    HTTP error or an answer that is not the JSON asked for. The pipeline falls
    back to the embedded default and shows this message as the reason."""

    status_code = 502


class Cancelled(PersonaVideoError):
    """The job was stopped on purpose (a new Generate, the page closed): what was
    finished stays in the job folder and its manifest says "cancelled"."""

    status_code = 409


class FetchError(PersonaVideoError):
    """Downloading a weights file failed (``python -m persona_video fetch``); the message says what to do.

    kind: "offline" | "auth" | "not_found" | "stalled" | "interrupted" | "mismatch"
    | "disk_full" | "write" | "licence" | "http".
    """

    status_code = 502

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
