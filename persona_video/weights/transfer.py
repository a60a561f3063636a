"""The HTTP side of ``fetch``: one GET of a registry entry from a byte offset into its partial file.

Hub entries are resolved through the Hub's API with ``huggingface_hub`` (a HEAD
on ``/{repo}/resolve/{revision}/{file}``: ``X-Repo-Commit``, ``ETag`` /
``X-Linked-Etag``, ``X-Linked-Size``, ``Location``), with ``HF_ENDPOINT`` and
``HF_TOKEN`` honoured, and streamed through its HTTP client; release-URL entries
are streamed with ``httpx``. What the server announces (size, SHA-256 ETag) is
checked against the pin before the first byte is written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import httpx2

from persona_video.errors import FetchError
from persona_video.weights.catalog import HubFile, Weight
from persona_video.weights.registry import fetch_command

CONNECT_ERRORS = (httpx.ConnectError, httpx2.ConnectError, httpx.ConnectTimeout, httpx2.ConnectTimeout)
STALL_ERRORS = (httpx.TimeoutException, httpx2.TimeoutException)
#: Everything that ends a connection early: caught to resume from the partial file.
TRANSPORT_ERRORS = (httpx.TransportError, httpx2.TransportError)
#: File suffix -> the bytes every such file starts with: wrong bytes are refused at the first chunk,
#: not after a gigabyte (the SHA-256 check at the end still decides).
FILE_MAGIC = {".gguf": b"GGUF"}


@dataclass(frozen=True)
class TransferSettings:
    """env: where HF_ENDPOINT and HF_TOKEN are read; timeouts in seconds."""

    env: Mapping[str, str]
    connect_timeout_s: float
    read_timeout_s: float

    def endpoint(self) -> str:
        from huggingface_hub import constants

        return (self.env.get("HF_ENDPOINT", "").strip() or constants.ENDPOINT).rstrip("/")


def host_of(url: str) -> str:
    return urlsplit(url).netloc or url


def source_host(weight: Weight, settings: TransferSettings) -> str:
    """The host a download of ``weight`` talks to first."""
    return host_of(settings.endpoint() if isinstance(weight.source, HubFile) else weight.source.url)


@contextmanager
def _open_hub(weight: Weight, offset: int, settings: TransferSettings) -> Iterator[tuple[str, object]]:
    """Resolve the pinned file through the Hub's API, check what it announces, then GET from ``offset``."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers, http_stream_backoff

    source = weight.source
    assert isinstance(source, HubFile)
    endpoint = settings.endpoint()
    token = settings.env.get("HF_TOKEN", "").strip() or None
    url = hf_hub_url(source.repo_id, source.filename, revision=source.revision, endpoint=endpoint)
    timeout = httpx2.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
    metadata = get_hf_file_metadata(url, token=token, timeout=timeout, endpoint=endpoint)
    if metadata.size is not None and metadata.size != weight.size:
        raise FetchError(
            "mismatch",
            f"{host_of(url)} says {weight.name} ({source.describe()}) is {metadata.size:,} bytes, the pin says "
            f"{weight.size:,}: refused before downloading (check HF_ENDPOINT if you set it)",
        )
    etag = (metadata.etag or "").lower()
    if weight.sha256 and len(etag) == 64 and etag != weight.sha256:
        raise FetchError(
            "mismatch",
            f"{host_of(url)} says {weight.name} ({source.describe()}) has SHA-256 {etag}, the pin says "
            f"{weight.sha256}: refused before downloading (check HF_ENDPOINT if you set it)",
        )
    headers = build_hf_headers(token=token)
    if host_of(metadata.location) != host_of(url):
        headers.pop("authorization", None)  # the token is for the Hub, not for the storage it redirects to
    headers["Accept-Encoding"] = "identity"  # sizes and hashes are of the bytes as stored
    if offset:
        headers["Range"] = f"bytes={offset}-"
    with http_stream_backoff(
        "GET",
        metadata.location,
        headers=headers,
        timeout=timeout,
        max_retries=0,
        retry_on_exceptions=(),
        retry_on_status_codes=(),
    ) as response:
        yield url, response


@contextmanager
def _open_url(url: str, offset: int, settings: TransferSettings) -> Iterator[tuple[str, object]]:
    headers = {"Accept-Encoding": "identity", "User-Agent": "persona-video"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    timeout = httpx.Timeout(settings.read_timeout_s, connect=settings.connect_timeout_s)
    with (
        httpx.Client(timeout=timeout, follow_redirects=True) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        yield url, response


def status_error(weight: Weight, url: str, status: int) -> FetchError:
    """The FetchError for an HTTP error status, with what to do about it."""
    host = host_of(url)
    if status in (401, 403):
        if isinstance(weight.source, HubFile):
            fix = (
                f"the repository {weight.source.repo_id} may be gated or private: accept its terms on its page, "
                "set HF_TOKEN to a Hugging Face access token that can read it, and fetch again"
            )
        else:
            fix = "the file is not public there (any more); check the address in the registry"
        return FetchError("auth", f"{host} refused {weight.name} (HTTP {status}): {fix}")
    if status == 404:
        return FetchError(
            "not_found",
            f"{url} was not found (HTTP 404): the pinned file is not on {host} "
            "(if you set HF_ENDPOINT, that mirror lacks it)",
        )
    return FetchError("http", f"{host} answered HTTP {status} for {weight.name}: try again later")


def transport_error(
    weight: Weight, error: Exception, held: int, settings: TransferSettings, target: Path
) -> FetchError:
    """The FetchError for a connection that failed, stalled or was cut with ``held`` bytes kept for ``target``."""
    host = source_host(weight, settings)
    command = fetch_command(weight)
    if isinstance(error, CONNECT_ERRORS):
        return FetchError(
            "offline",
            f"cannot reach {host} to download {weight.name} ({type(error).__name__}: {error}): this machine looks "
            f"offline. Connect it and run `{command}` again, or put the file at {target} yourself",
        )
    resume = f"{held:,} of {weight.size:,} bytes are kept in a partial file; run `{command}` again to resume"
    if isinstance(error, STALL_ERRORS):
        return FetchError(
            "stalled",
            f"downloading {weight.name} from {host} stalled (no data for {settings.read_timeout_s:g} s): {resume}",
        )
    return FetchError(
        "interrupted", f"downloading {weight.name} from {host} was cut ({type(error).__name__}): {resume}"
    )


def _announced_total(response, offset: int) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    total = content_range.rsplit("/", 1)[-1].strip() if "/" in content_range else ""
    if total.isdigit():
        return int(total)
    length = response.headers.get("Content-Length", "")
    if length.isdigit():
        return int(length) + (offset if response.status_code == 206 else 0)
    return None


def receive(
    weight: Weight, part: Path, offset: int, settings: TransferSettings, on_bytes: Callable[[int], None]
) -> int:
    """One GET of ``weight`` from byte ``offset``, appended to ``part``; returns the bytes ``part`` holds after.

    ``on_bytes(n)`` after each chunk written (negative when the server ignored the Range and
    the partial file starts over). Raises FetchError for HTTP errors and for a size that is
    not the pinned one; transport errors (httpx / httpx2) propagate for the caller to resume.
    """
    opener = (
        _open_hub(weight, offset, settings)
        if isinstance(weight.source, HubFile)
        else _open_url(weight.source.url, offset, settings)
    )
    with opener as (url, response):
        if response.status_code == 416 and offset:
            part.unlink(missing_ok=True)  # the partial file does not fit what the server has: start over
            on_bytes(-offset)
            return 0
        if response.status_code >= 400:
            response.read()
            raise status_error(weight, url, response.status_code)
        if offset and response.status_code != 206:
            on_bytes(-offset)  # the server ignored the Range header and sends the whole file again
            offset = 0
        total = _announced_total(response, offset)
        if total is not None and total != weight.size:
            raise FetchError(
                "mismatch",
                f"{host_of(url)} serves {weight.name} as {total:,} bytes, the pin says {weight.size:,}: "
                "refused, nothing was kept",
            )
        written = offset
        magic = FILE_MAGIC.get(Path(weight.relative_path).suffix)
        with open(part, "ab" if offset else "wb") as handle:
            for chunk in response.iter_bytes():  # as they arrive: a cut loses nothing received
                if written == 0 and magic and len(chunk) >= len(magic) and not chunk.startswith(magic):
                    raise FetchError(
                        "mismatch",
                        f"{host_of(url)} sent bytes for {weight.name} that do not start like a "
                        f"{Path(weight.relative_path).suffix} file: refused at the first chunk, nothing was kept",
                    )
                if written + len(chunk) > weight.size:
                    raise FetchError(
                        "mismatch",
                        f"{host_of(url)} sent more than the pinned {weight.size:,} bytes of {weight.name}: "
                        "refused, nothing was kept",
                    )
                handle.write(chunk)
                written += len(chunk)
                on_bytes(len(chunk))
        return written
