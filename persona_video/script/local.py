"""The local script model: llama.cpp in-process (``xllamacpp``) on a GGUF file.

No key, no server to run, nothing leaves the machine. The model is loaded once
per process behind a lock (at server warm-up when the file is there), on as
many threads as the process may use. Each persona keeps its own llama.cpp slot,
so its system prompt is evaluated once per process and then reused from the
prompt cache, not paid for on every request.

Output is constrained while decoding by a grammar of the project's script
markup (``[pause]``, ``*stressed words*``, whole sentences of plain words), so
every model, even a random-weight test model, writes text that parses; the
markup is a third of the tokens the segments JSON would cost.

xllamacpp always opens its HTTP listener; it is bound to the loopback address
on a random port, with a random API key that never leaves this process and no
cross-origin access, so neither other local programs nor web pages can use it.

Which file: ``PERSONA_VIDEO_LLM_GGUF`` (any GGUF path), else the registered
default under ``checkpoints/llm/`` (``python -m persona_video fetch llm``), else
any other ``*.gguf`` there. Its chat template comes from the file.
"""

from __future__ import annotations

import logging
import os
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..errors import BackendUnavailable, Cancelled, ServiceError

logger = logging.getLogger(__name__)
T = TypeVar("T")

#: Environment variable naming a GGUF file to write scripts with.
GGUF_ENV = "PERSONA_VIDEO_LLM_GGUF"
#: llama.cpp slots: one per persona in use keeps each system prompt cached.
SLOTS = 2
#: Context per slot, tokens: the system prompt (~400), the request and the longest answer.
SLOT_CONTEXT = 3072
#: The nice value of llama.cpp's threads (``PERSONA_VIDEO_LLM_NICE``, 0 to 19; 0 turns it off):
#: beside a streamed job the speech, the renderer and the encoder come first, so a sentence's
#: first segment is not held back by the model writing the next one; the model takes the cores
#: whenever they would idle, so alone it writes as fast as before.
WRITER_NICE = 10
_MAGIC = b"GGUF"
_FIX = "fetch the default model again (python -m persona_video fetch llm) or set PERSONA_VIDEO_LLM_GGUF to another GGUF"


def process_threads() -> int:
    """The CPU cores this process may use (its affinity mask, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ModelFile:
    """A GGUF file, checked: path, its name (general.name or the file name),
    architecture (general.architecture), chat template (Jinja, from the file), size."""

    path: Path
    name: str
    architecture: str
    chat_template: str
    size_bytes: int


def inspect_gguf(path: Path) -> ModelFile:
    """Read a GGUF file's header; BackendUnavailable naming the file and the fix when it
    is missing, not a GGUF, truncated, or has no chat template."""
    path = Path(path)
    if not path.is_file():
        raise BackendUnavailable(f"the script model {path} does not exist: {_FIX}")
    with path.open("rb") as f:
        magic = f.read(4)
    if magic != _MAGIC:
        raise BackendUnavailable(f"{path} is not a GGUF model file (it starts with {magic!r}): {_FIX}")
    import gguf

    try:
        reader = gguf.GGUFReader(str(path))
    except (ValueError, IndexError, OSError) as e:  # a truncated file fails while the tensors are mapped
        raise BackendUnavailable(f"{path} is not a complete GGUF file ({e}): {_FIX}") from e

    def text(key: str) -> str:
        entry = reader.fields.get(key)
        if entry is None:
            return ""
        return bytes(entry.parts[entry.data[0]]).decode("utf-8", errors="replace")

    template = text("tokenizer.chat_template")
    if not template:
        raise BackendUnavailable(f"{path} has no chat template (tokenizer.chat_template): use an instruct/chat GGUF")
    return ModelFile(
        path=path,
        name=text("general.name") or path.stem,
        architecture=text("general.architecture") or "unknown",
        chat_template=template,
        size_bytes=path.stat().st_size,
    )


def render_chat(model: ModelFile, system: str, user: str) -> str:
    """The prompt text for a system and a user message, by the file's own chat template."""
    from jinja2.exceptions import TemplateError
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
    try:
        return env.from_string(model.chat_template).render(
            messages=messages, add_generation_prompt=True, bos_token="", eos_token="", tools=None
        )
    except TemplateError as e:
        raise BackendUnavailable(f"the chat template in {model.path} does not render ({e}): {_FIX}") from e


@dataclass
class Timings:
    """The last completion's figures, from llama.cpp: prompt tokens evaluated (cached
    ones excluded), prompt tokens/s, tokens written and tokens/s."""

    prompt_tokens: int = 0
    cached_tokens: int = 0
    prompt_per_s: float = 0.0
    predicted_tokens: int = 0
    predicted_per_s: float = 0.0


@dataclass
class LocalModel:
    """A loaded model: one per process and file (see ``load_local_model``)."""

    file: ModelFile
    threads: int
    server: Any
    lock: threading.Lock = field(default_factory=threading.Lock)
    slots: dict[str, int] = field(default_factory=dict)
    timings: Timings = field(default_factory=Timings)

    def slot_for(self, key: str) -> int:
        """The llama.cpp slot that keeps ``key``'s (a persona's) prompt cached."""
        if key not in self.slots:
            self.slots[key] = len(self.slots) % SLOTS
        return self.slots[key]

    def complete(
        self,
        prompt: str,
        *,
        grammar: str,
        temperature: float,
        max_tokens: int,
        seed: int,
        cache_key: str,
        cancel: threading.Event | None = None,
    ) -> Iterator[str]:
        """Stream the text pieces of one completion of ``prompt`` under ``grammar``.

        max_tokens: tokens to write at most; seed: the sampler's seed (same seed,
        same text); cache_key: which slot's prompt cache to use (the persona id).
        Stops early, raising Cancelled, once ``cancel`` is set; closing the
        iterator stops llama.cpp too. ServiceError when llama.cpp reports an error.
        """
        request = {
            "prompt": prompt,
            "max_tokens": int(max_tokens),
            "temperature": float(temperature),
            "seed": int(seed) & 0x7FFFFFFF,
            "grammar": grammar,
            "stream": True,
            "cache_prompt": True,
            "id_slot": self.slot_for(cache_key),
        }
        pieces: queue.Queue[Any] = queue.Queue()
        stop = threading.Event()
        done = object()

        def on_chunk(chunk: dict) -> bool:
            pieces.put(chunk)
            return stop.is_set() or (cancel is not None and cancel.is_set())

        def run() -> None:
            try:
                self.server.handle_completions(request, on_chunk)
            except Exception as e:  # reported to the reading side, which raises it
                pieces.put(e)
            finally:
                pieces.put(done)

        with self.lock:
            worker = threading.Thread(target=run, name="local-llm", daemon=True)
            worker.start()
            try:
                while (item := pieces.get()) is not done:
                    if isinstance(item, Exception):
                        raise ServiceError(f"the local model {self.file.name} failed: {item}") from item
                    if "error" in item or "choices" not in item:
                        message = item.get("error", item)
                        message = message.get("message", message) if isinstance(message, dict) else message
                        raise ServiceError(f"the local model {self.file.name} failed: {message}")
                    if "timings" in item:
                        self._record(item)
                    text = item["choices"][0].get("text") or ""
                    if text:
                        yield text
                    if cancel is not None and cancel.is_set():
                        raise Cancelled("the script was cancelled while the model was writing it")
            finally:
                stop.set()
                worker.join()

    def _record(self, item: dict) -> None:
        timings = item.get("timings") or {}
        self.timings = Timings(
            prompt_tokens=int(timings.get("prompt_n", 0)),
            cached_tokens=int(timings.get("cache_n", 0)),
            prompt_per_s=float(timings.get("prompt_per_second", 0.0)),
            predicted_tokens=int(timings.get("predicted_n", 0)),
            predicted_per_s=float(timings.get("predicted_per_second", 0.0)),
        )


_MODELS: dict[Path, LocalModel] = {}
_MODELS_LOCK = threading.Lock()


def load_local_model(path: Path, *, threads: int | None = None) -> LocalModel:
    """The model in ``path``, loaded once per process (later calls return the same one).

    threads: CPU threads for llama.cpp (default: the cores this process may use).
    BackendUnavailable, naming the file and the fix, when it cannot be loaded.
    """
    path = Path(path).resolve()
    with _MODELS_LOCK:
        if path in _MODELS:
            return _MODELS[path]
        file = inspect_gguf(path)
        # llama.cpp's threads wait for work by spinning; beside the speech and the renderer of a
        # streamed job, which want the same two cores, they are told to sleep instead (read by the
        # OpenMP runtime when the library loads; a value set by the user stays)
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        try:
            import xllamacpp
        except ImportError as e:
            raise BackendUnavailable(
                "the local script model needs the xllamacpp package: pip install -r requirements.txt"
            ) from e
        threads = threads or process_threads()
        params = xllamacpp.CommonParams()
        params.model.path = str(path)
        params.n_parallel = SLOTS
        params.n_ctx = SLOTS * SLOT_CONTEXT
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.cpuparams.poll = params.cpuparams_batch.poll = 0  # no busy-waiting between tasks either
        params.warmup = False
        # read into memory, not mapped: llama.cpp repacks most of the weights for its x86 kernels
        # into memory of its own, and the mapped file's pages of those (half a gigabyte for the
        # default model) stayed resident though nothing reads them again
        params.load_mode = xllamacpp.llama_load_mode.LLAMA_LOAD_MODE_NONE
        params.verbosity = 0
        # The listener xllamacpp always opens: loopback, a random port, a key only this process knows.
        params.hostnames = ["127.0.0.1"]
        params.port = 0
        params.api_keys = [secrets.token_urlsafe(24)]
        params.cors_origins = "http://127.0.0.1:1"
        params.ui = False
        started = time.perf_counter()
        try:
            server = _yielding(lambda: xllamacpp.Server(params))
        except RuntimeError as e:
            raise BackendUnavailable(
                f"llama.cpp could not load {path} (architecture {file.architecture!r}): the file may be "
                f"truncated or of an architecture this llama.cpp does not know; {_FIX}"
            ) from e
        seconds = time.perf_counter() - started
        logger.info("loaded the script model %s in %.2f s on %d threads", path.name, seconds, threads)
        model = LocalModel(file=file, threads=threads, server=server)
        _MODELS[path] = model
        return model


def _yielding(make: Callable[[], T]) -> T:
    """``make()`` run in a thread of its own at the writer's nice value (``WRITER_NICE``): the
    threads llama.cpp starts there (its server loop, which runs the compute, and the compute
    threads) inherit it. A thread of its own, because a thread's nice value can be raised but,
    without privileges, not lowered again."""
    from ..settings import env_number

    nice = env_number(
        "PERSONA_VIDEO_LLM_NICE", WRITER_NICE, example="10", whole=True, minimum=0, error=BackendUnavailable
    )
    result: dict[str, Any] = {}

    def run() -> None:
        if nice:
            try:
                os.setpriority(os.PRIO_PROCESS, 0, min(int(nice), 19))  # 0: this thread, on Linux
            except (OSError, AttributeError) as e:  # not Linux: the model runs at the usual priority
                logger.debug("script model threads left at the usual priority: %s", e)
        try:
            result["value"] = make()
        except BaseException as e:  # noqa: BLE001  (raised again in the caller's thread)
            result["error"] = e

    thread = threading.Thread(target=run, name="script-model-load")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    return result["value"]


def find_local_model(env: dict[str, str] | os._Environ) -> Path | None:
    """The GGUF to write with (``persona_video.weights.background.local_llm_path``):
    $PERSONA_VIDEO_LLM_GGUF, else the registered default model, else the registered small
    one (each at its pinned size, in ``checkpoints/llm/`` or the Hugging Face cache), else
    any other ``*.gguf`` under ``checkpoints/llm/``; None when there is none. A variable
    naming a file that does not exist is an error that names it."""
    from ..weights.background import local_llm_path

    return local_llm_path(env)
