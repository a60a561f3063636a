"""One server for people and programs: the REST API under ``/api`` and, when
given, the Gradio page at ``/``.

    python -m persona_video.server          # or app.py; GRADIO_SERVER_NAME/PORT, PORT
    app = create_server(build_ui())         # an ASGI app, e.g. for uvicorn

Errors are JSON ``{"error": {"code", "message"}}`` with the status the error
class names (400/404/409/413/422/429/503); request bodies under ``/api`` over
PERSONA_VIDEO_MAX_UPLOAD_MB (default 20) are refused with 413.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from .api.routes import router
from .errors import PersonaVideoError
from .jobs.queue import JobRunner, QueueFull, error_code
from .jobs.remote import runner_from_env
from .jobs.retention import RetentionPolicy, apply_retention
from .settings import env_number

logger = logging.getLogger(__name__)

DEFAULT_MAX_UPLOAD_MB = 20.0
_HTTP_CODES = {400: "bad_request", 404: "not_found", 405: "method_not_allowed", 413: "too_large"}


def max_body_bytes_from_env() -> int:
    megabytes = env_number("PERSONA_VIDEO_MAX_UPLOAD_MB", DEFAULT_MAX_UPLOAD_MB, example="20", positive=True)
    return int(megabytes * 1024 * 1024)


def error_body(code: str, message: str) -> dict[str, Any]:
    return {"error": {"code": code, "message": message}}


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_bytes`` under ``prefix`` with 413, whether
    announced by Content-Length or streamed (then the app's answer is replaced)."""

    def __init__(self, app: Any, max_bytes: int, prefix: str = "/api") -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.prefix = prefix

    def _too_large(self) -> JSONResponse:
        limit_mb = self.max_bytes / (1024 * 1024)
        message = (
            f"the request is larger than {limit_mb:g} MB: upload a smaller file (e.g. a JPEG under {limit_mb:g} MB)"
        )
        return JSONResponse(error_body("too_large", message), status_code=413)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.max_bytes:
            await self._too_large()(scope, receive, send)
            return
        received = 0
        exceeded = False
        answered = False

        async def counting_receive() -> dict:
            nonlocal received, exceeded
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    exceeded = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal answered
            if exceeded:
                if not answered:
                    answered = True
                    await self._too_large()(scope, receive, send)
                return
            await send(message)

        await self.app(scope, counting_receive, guarded_send)


def _validation_message(exc: RequestValidationError) -> tuple[int, str]:
    parts = []
    status = 422
    for err in exc.errors():
        if err.get("type") == "json_invalid":
            status = 400
            parts.append('the body is not valid JSON: send a JSON object, e.g. {"prompt": "Explain the M4 Mac Mini"}')
            continue
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        message = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return status, "; ".join(parts) or "invalid request"


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(PersonaVideoError)
    async def _persona_error(request: Request, exc: PersonaVideoError) -> JSONResponse:
        code = getattr(exc, "code", None) or error_code(exc)
        headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, QueueFull) else None
        return JSONResponse(error_body(code, str(exc)), status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        status, message = _validation_message(exc)
        return JSONResponse(error_body("bad_request" if status == 400 else "invalid_input", message), status)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        return JSONResponse(error_body(code, str(exc.detail)), exc.status_code, headers=exc.headers)

    from redis.exceptions import RedisError

    @app.exception_handler(RedisError)
    async def _broker_away(request: Request, exc: RedisError) -> JSONResponse:
        # only the broker path talks to Redis; its client has retried for ~20 s before this
        message = f"the job broker (PERSONA_VIDEO_BROKER) did not answer: {exc}; try again shortly"
        return JSONResponse(error_body("broker_unavailable", message), status_code=503)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception("unexpected error on %s", request.url.path)
        return JSONResponse(error_body("internal", f"{type(exc).__name__}: {exc}"), status_code=500)


def create_server(blocks: Any = None, *, queue: JobRunner | None = None, max_body_bytes: int | None = None) -> FastAPI:
    """The FastAPI app: API routes under /api, OpenAPI at /openapi.json, docs at /api/docs,
    and the Gradio Blocks mounted at "/" when given.

    queue: the job runner (default: with PERSONA_VIDEO_BROKER set, the broker's queue, which
        raises BrokerError naming the variable when it is wrong or unreachable; else an in-process
        queue of PERSONA_VIDEO_QUEUE_SIZE waiting jobs, retention after each job).
    max_body_bytes: request size limit under /api (default PERSONA_VIDEO_MAX_UPLOAD_MB).
    """
    from .render.frame_cache import budget_bytes

    policy = RetentionPolicy.from_env()  # a bad setting stops the server at start, not later
    budget_bytes()  # the same for PERSONA_VIDEO_FRAME_CACHE_MB
    queue = queue or runner_from_env(after_each=lambda active: apply_retention(policy, active=active))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(apply_retention, policy, active=queue.active_job_ids())
        yield
        await asyncio.to_thread(queue.stop)

    app = FastAPI(
        title="Persona Video",
        version="0.1.0",
        description="Prompt to talking-head explainer video in a chosen presenter style.",
        docs_url="/api/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.job_queue = queue
    app.add_middleware(BodyLimitMiddleware, max_bytes=max_body_bytes or max_body_bytes_from_env())
    _install_error_handlers(app)
    app.include_router(router, prefix="/api")

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"], include_in_schema=False)
    async def _no_such_route(rest: str, request: Request) -> JSONResponse:
        # Without this a path under /api that is not ours would fall through to the page's 404.
        message = f"no API route {request.method} /api/{rest[:80]}: see /api/docs for the routes"
        return JSONResponse(error_body("not_found", message), status_code=404)

    if blocks is not None:
        import gradio as gr

        app = gr.mount_gradio_app(app, blocks, path="/")
    return app


def _build_blocks() -> Any:
    """The Gradio page, or None (API alone) when the UI module is not there."""
    try:
        from .app.layout import build_ui
    except ImportError as e:
        logger.warning("serving the API alone: the web page cannot be built (%s)", e)
        return None
    return build_ui()


def warm_up(script_model: bool = True) -> float:
    """Load what a first request would otherwise wait for: each shipped persona's embedded voice
    and its portrait's face mesh and animator (crop framing), the heavy in-process models that
    can run here (XTTS v2, GFPGAN) and, with ``script_model``, the local script model
    (``warm_script_model``). Returns the seconds it took. A failure is logged and left for the
    request that needs the part to report."""
    from .errors import PersonaVideoError
    from .personas import list_personas
    from .render.stage import load_portrait_for
    from .speech.voices import EMBEDDED_VOICES, get_voice
    from .weights.preload import preload_heavy_models

    started = time.perf_counter()
    for persona in list_personas():
        try:
            portrait = load_portrait_for(persona, None, "crop")
            if persona.speech.voice in EMBEDDED_VOICES:
                get_voice(persona.speech.voice)
        except (PersonaVideoError, OSError, ValueError) as e:
            logger.warning("warm-up: persona %s not preloaded: %s", persona.id, e)
            continue
        if persona.speech.voice in EMBEDDED_VOICES:
            try:
                _first_run(persona, portrait)
            except Exception as e:  # noqa: BLE001  (only a speed-up: the rest of the warm-up goes on)
                why = f"{type(e).__name__}: {e}"
                logger.warning("warm-up: persona %s: the first sentence failed (%s)", persona.id, why)
    logger.info("warm-up: voices, portraits and a first sentence per persona in %.2f s", time.perf_counter() - started)
    from .weights.first_start import first_start_fetch

    fetching = first_start_fetch()
    if fetching is not None:
        fetching.wait()  # the heavy weights arrive in the background: load them once they are there
    preload_heavy_models()
    if script_model:
        warm_script_model()
    return time.perf_counter() - started


def _first_run(persona: Any, portrait: Any) -> None:
    """One short sentence through the persona's voice, motion, governor and renderer, and ffmpeg
    started once: their first calls set up what later ones reuse (the voice model's buffers, the
    renderer's first frame, ffmpeg's binary read from disk), which made a first job's first segment
    come about twice as late as a later job's."""
    import subprocess

    from .encode.encoder import rgb_to_yuv
    from .encode.probe import ffmpeg_exe
    from .governor import govern
    from .motion.generator import generate_motion
    from .pipeline import governor_config_for
    from .script import parse_markup
    from .speech import synthesize_with_intent

    speech = synthesize_with_intent(parse_markup("Hello, *this* is a test."), persona)
    track = generate_motion(speech, persona.motion)
    governed, _ = govern(track, speech.timing, governor_config_for(persona, None))
    rgb_to_yuv(portrait.animator.render_frame(governed.coeffs[len(governed.coeffs) // 2]))
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-version"], capture_output=True, check=False)


def warm_script_model() -> None:
    """Load the local script model, when there is one, and evaluate each persona's system
    prompt into its cache, so the first script starts at once. Failures are logged: the
    first request that needs the model reports them."""
    from .errors import PersonaVideoError
    from .personas import list_personas
    from .script.local import find_local_model
    from .script.local_writer import warm_local
    from .weights.background import script_model_fetch

    fetching = script_model_fetch()
    if fetching is not None:
        fetching.wait()  # the model arrives in the background: warm it once it is there
    try:
        path = find_local_model(os.environ)
        if path is None:
            return
        started = time.perf_counter()
        for persona in list_personas():
            warm_local(persona, path)
        logger.info("warm-up: script model %s ready in %.2f s", path.name, time.perf_counter() - started)
    except PersonaVideoError as e:
        logger.warning("warm-up: the local script model is not ready: %s", e)


def serve(host: str | None = None, port: int | None = None) -> None:
    """Serve page and API on GRADIO_SERVER_NAME:GRADIO_SERVER_PORT (or PORT), default 0.0.0.0:7860.

    The voices, portraits, heavy models and script model load in the background as the server
    starts (``warm_up``), so the first Generate does not wait for them; a missing default script
    model is fetched in the background (the page shows its progress; scripts are templates until
    it is there). On a ZeroGPU Space the heavy models load before the server answers and the
    platform is told the app is up (``zerogpu.report_startup``)."""
    import uvicorn

    from .zerogpu import on_zero_gpu, report_startup

    host = host or os.environ.get("GRADIO_SERVER_NAME", "").strip() or "0.0.0.0"
    port = port or int(os.environ.get("GRADIO_SERVER_PORT", "").strip() or os.environ.get("PORT", "").strip() or 7860)
    from .jobs.broker import BrokerError
    from .jobs.remote import shared_broker_queue

    try:
        shared_broker_queue()  # a wrong or unreachable broker stops the server at once, naming the variable
    except BrokerError as e:
        logger.error("%s", e)
        raise SystemExit(f"error: {e}") from e
    app = create_server(_build_blocks())
    from .weights.background import autofetch_script_model
    from .weights.first_start import fetch_on_start

    autofetch_script_model()  # the default script model, once, in the background (PERSONA_VIDEO_FETCH=0: never)
    fetch_on_start()  # a deployment's missing heavy weights (PERSONA_VIDEO_FETCH_ON_START), in the background
    if on_zero_gpu():
        # ZeroGPU packs the models placed on the GPU when it hears the app is up: load them first
        warm_up(script_model=False)
        report_startup()
        threading.Thread(target=warm_script_model, name="warm-up", daemon=True).start()
    else:
        threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    logger.info("Persona Video on http://%s:%d (API under /api, docs at /api/docs)", host, port)
    # Behind a proxy (a Space), the forwarded scheme and host make the absolute URLs right.
    uvicorn.run(app, host=host, port=port, proxy_headers=True, forwarded_allow_ips="*", log_level="info")


class BackgroundServer:
    """The app on a free loopback port in a thread (tests, benchmarks): ``with BackgroundServer(app) as url:``."""

    def __init__(self, app: Any, host: str = "127.0.0.1") -> None:
        import uvicorn

        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, 0))
        self.url = f"http://{host}:{self._socket.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._socket]}, daemon=True)

    def __enter__(self) -> str:
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError("the test server did not start: see the log above")
            threading.Event().wait(0.02)
        return self.url

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(30)
        self._socket.close()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    serve()
