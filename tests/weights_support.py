"""Test support for the weights fetcher: registry entries pointing at test bytes (``hub_entry``,
``url_entry``), and ``FakeHub``, a loopback HTTP server that speaks the Hugging Face Hub's resolve
API and serves release URLs.

``HEAD /{repo}/resolve/{revision}/{file}`` answers the way the Hub does: an LFS
file gets a 302 to its storage (a different host name, ``localhost``, so the
client stops there and reads ``X-Repo-Commit``, ``X-Linked-Etag`` and
``X-Linked-Size`` from the redirect), a small git file a 200 with ``ETag`` and
``Content-Length``. GETs honour ``Range: bytes=N-`` with 206 and
``Content-Range``. Each served file can misbehave on purpose: an HTTP status,
a cut connection after some bytes, a stall, other bytes, another announced size.
"""

from __future__ import annotations

import hashlib
import http.server
import re
import socket
import threading
from dataclasses import dataclass, field
from pathlib import Path

from persona_video.weights.catalog import HubFile, ReleaseUrl, Weight
from persona_video.weights.registry import RECORD_NAME

#: The commit the test entries are pinned to.
REVISION = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class Served:
    """One file the server serves, and how it misbehaves.

    data: the bytes served (a callable (start, end) -> bytes serves a large body lazily).
    size: the size announced and served; default len(data).
    sha256: the SHA-256 announced in the ETag; default that of data.
    lfs: Hub files only: answer the HEAD with a 302 to the storage host (as the Hub does for LFS files).
    status: answer every request for it with this HTTP status instead.
    cut_after: close the connection after this many body bytes, for the first ``cut_times`` GETs.
    stall_after: send this many body bytes, then nothing until the server stops.
    body_length: send a Content-Length (and body) of this many bytes on GET, whatever was announced.
    """

    data: bytes | object
    size: int | None = None
    sha256: str | None = None
    lfs: bool = True
    status: int | None = None
    cut_after: int | None = None
    cut_times: int = 1
    stall_after: int | None = None
    body_length: int | None = None
    gets: int = 0

    def __post_init__(self) -> None:
        if self.size is None:
            self.size = len(self.data)  # type: ignore[arg-type]
        if self.sha256 is None and isinstance(self.data, bytes):
            self.sha256 = hashlib.sha256(self.data).hexdigest()

    def chunk(self, start: int, end: int) -> bytes:
        if isinstance(self.data, bytes):
            return self.data[start:end]
        return self.data(start, end)  # type: ignore[operator]


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str] = field(default_factory=dict)


class FakeHub:
    """Start with ``with FakeHub() as hub:``; ``hub.url`` is the endpoint (HF_ENDPOINT)."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        #: path -> absolute URL: answered with a 302 (as GitHub answers a release asset's address).
        self.redirects: dict[str, str] = {}
        self.requests: list[Request] = []
        self.stop = threading.Event()
        hub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:  # keep the test output quiet
                pass

            def do_HEAD(self) -> None:
                hub._handle(self, head=True)

            def do_GET(self) -> None:
                hub._handle(self, head=False)

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.storage_url = f"http://localhost:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> FakeHub:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.server.shutdown()
        self.server.server_close()

    def add_hub_file(self, repo_id: str, revision: str, filename: str, served: Served) -> Served:
        self.files[f"/{repo_id}/resolve/{revision}/{filename}"] = served
        self.files[f"/storage/{served.sha256}"] = served
        return served

    def add_url(self, path: str, served: Served) -> str:
        self.files[path] = served
        return self.url + path

    def _handle(self, handler: http.server.BaseHTTPRequestHandler, head: bool) -> None:
        path = handler.path.split("?", 1)[0]
        self.requests.append(Request(handler.command, path, {k.lower(): v for k, v in handler.headers.items()}))
        if path in self.redirects:
            self._reply(handler, 302, {"Location": self.redirects[path], "Content-Length": "0"})
            return
        served = self.files.get(path)
        if served is None:
            self._reply(handler, 404, {"X-Error-Code": "EntryNotFound", "Content-Length": "0"})
            return
        if served.status is not None:
            self._reply(handler, served.status, {"Content-Length": "0"})
            return
        is_resolve = "/resolve/" in path
        if head and is_resolve:
            revision = path.split("/resolve/", 1)[1].split("/", 1)[0]
            if served.lfs:
                self._reply(
                    handler,
                    302,
                    {
                        "Location": f"{self.storage_url}/storage/{served.sha256}",
                        "X-Repo-Commit": revision,
                        "X-Linked-Etag": f'"{served.sha256}"',
                        "X-Linked-Size": str(served.size),
                        "ETag": '"0123456789abcdef0123456789abcdef01234567"',
                        "Content-Length": "0",
                    },
                )
            else:
                git_etag = hashlib.sha1(served.chunk(0, served.size)).hexdigest()
                self._reply(
                    handler,
                    200,
                    {"X-Repo-Commit": revision, "ETag": f'"{git_etag}"', "Content-Length": str(served.size)},
                )
            return
        if head:
            self._reply(handler, 200, {"Content-Length": str(served.size)})
            return
        self._send_body(handler, served)

    def _send_body(self, handler: http.server.BaseHTTPRequestHandler, served: Served) -> None:
        served.gets += 1
        size = served.body_length if served.body_length is not None else served.size
        match = re.fullmatch(r"bytes=(\d+)-", handler.headers.get("Range", ""))
        start = int(match.group(1)) if match else 0
        if start >= size and match:
            self._reply(handler, 416, {"Content-Range": f"bytes */{size}", "Content-Length": "0"})
            return
        headers = {"Content-Length": str(size - start), "Accept-Ranges": "bytes"}
        if match:
            headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
        self._reply(handler, 206 if match else 200, headers, end=False)
        limit = size
        if served.cut_after is not None and served.gets <= served.cut_times:
            limit = min(size, start + served.cut_after)
        if served.stall_after is not None:
            limit = min(size, start + served.stall_after)
        position = start
        try:
            while position < limit:
                step = min(1 << 16, limit - position)
                handler.wfile.write(served.chunk(position, position + step))
                position += step
            handler.wfile.flush()
            if served.stall_after is not None and limit < size:
                self.stop.wait(30)
            if limit < size:
                handler.connection.shutdown(socket.SHUT_RDWR)
                handler.close_connection = True
        except (BrokenPipeError, ConnectionResetError, OSError):
            handler.close_connection = True

    @staticmethod
    def _reply(handler, status: int, headers: dict[str, str], end: bool = True) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        if end:
            handler.wfile.flush()

    def gets(self, path_part: str) -> list[Request]:
        return [r for r in self.requests if r.method == "GET" and path_part in r.path]


def hub_entry(name: str, data: bytes, filename: str = "weights.bin", **options) -> Weight:
    """A registry entry for ``data`` as ``acme/model`` at REVISION on the Hub, under checkpoints/test/."""
    values = {
        "name": name,
        "backend": "test",
        "relative_path": f"test/{filename}",
        "description": "a test file",
        "group": "test",
        "source": HubFile("acme/model", REVISION, filename),
        "size": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "licence": "MIT",
    }
    return Weight(**{**values, **options})


def url_entry(name: str, data: bytes, url: str, filename: str = "release.bin") -> Weight:
    """A registry entry for ``data`` at a release URL."""
    return hub_entry(name, data, filename, source=ReleaseUrl(url))


def leftovers(root: Path) -> list[str]:
    """Every file under the checkpoints folder except the verification record and the lock files."""
    files = (p.relative_to(root) for p in root.rglob("*") if p.is_file() and p.name != RECORD_NAME)
    return sorted(str(p) for p in files if p.parts[0] != ".locks")
