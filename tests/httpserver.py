"""A real HTTPS (or plain HTTP) file server on loopback, with fault injection, for download tests.

Use it as a context manager, or through the pytest fixtures defined here (import them into a
test module: ``from httpserver import https_server`` -- pytest then finds the fixture)::

    def test_download(https_server: Server) -> None:
        url = https_server.add("/m.bin", b"weights")               # -> https://127.0.0.1:PORT/m.bin
        https_server.add("/cut.bin", b"x" * 1000, truncate_at=100)  # sends 100 bytes, then closes
        https_server.add("/flaky.bin", data, die_once_at=500)       # 1st GET dies; Range after
        https_server.add("/r", b"", redirect_to=https_server.url("/m.bin", host="localhost"))
        ...
        assert https_server.count("/m.bin") == 1
        assert https_server.requests[0].headers.get("Range") is None

    with serve({"/a": b"hello"}) as server:   # outside pytest: trust server.ca_pem yourself
        ...

The `https_server` fixture sets SSL_CERT_FILE to the test CA's PEM (monkeypatch), which is how a
user trusts a private CA, so the code under test needs no special hook. The certificate covers
127.0.0.1, localhost and ::1: a redirect to "the other host" (localhost vs 127.0.0.1) reaches the
same server but is a different origin for an allowlist. The server listens on 127.0.0.1 only.

Faults per path (keyword arguments of `add` / values of `Route`):
  status=N          answer every request with status N (and the body as an error page)
  fail_times=N      answer the first N requests with 500, then serve normally
  truncate_at=N     every response stops after byte N of the body (absolute offset) and the
                    connection is dropped; Content-Length still claims the full length
  die_once_at=N     the first request dies after N bytes; later ones serve (and honour Range)
  redirect_to=URL   302 to URL (redirect_status= to change the code)
  content_length=N  send this Content-Length whatever the body is (a lie, e.g. 10**12)
  no_length=True    no Content-Length: the body runs until the connection closes (so a client
                    can only enforce a size cap on the bytes it actually receives)
  ignore_range=True answer Range requests with 200 and the whole body
  etag=...          the ETag (default: derived from the body); If-Range is honoured
No sleeps anywhere; `close()` drops open connections and stops the thread.
"""

from __future__ import annotations

import hashlib
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme

HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass
class Route:
    """What the server answers for one path, and how it misbehaves."""

    body: bytes = b""
    status: int = 200
    fail_times: int = 0
    truncate_at: int | None = None
    die_once_at: int | None = None
    redirect_to: str | None = None
    redirect_status: int = 302
    content_length: int | None = None
    no_length: bool = False
    ignore_range: bool = False
    etag: str | None = None
    last_modified: str = "Wed, 21 Oct 2026 07:28:00 GMT"
    headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.etag is None:
            self.etag = '"' + hashlib.sha256(self.body).hexdigest()[:16] + '"'


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]

    def __iter__(self) -> Iterator[Any]:  # unpacks as (method, path, headers)
        return iter((self.method, self.path, self.headers))


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _HTTPServer
    timeout = 30  # a forgotten keep-alive connection does not keep a thread forever

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def _answer(self, send_body: bool) -> None:
        owner = self.server.owner
        headers = {k: v for k, v in self.headers.items()}
        nth = owner._record(Request(self.command, self.path, headers))
        route = owner.routes.get(self.path) or owner.routes.get(self.path.split("?", 1)[0])
        if route is None:
            self._simple(404, b"not found\n")
            return
        if route.redirect_to is not None:
            self._simple(route.redirect_status, b"", {"Location": route.redirect_to})
            return
        if route.status != 200:
            self._simple(route.status, route.body or b"error\n")
            return
        if nth <= route.fail_times:
            self._simple(500, b"try again\n")
            return
        body = route.body
        start = 0
        status = 200
        extra: dict[str, str] = {}
        wanted = self.headers.get("Range")
        if_range = self.headers.get("If-Range")
        if (
            wanted
            and not route.ignore_range
            and (if_range is None or if_range == route.etag)
            and wanted.startswith("bytes=")
            and wanted[6:].endswith("-")
            and wanted[6:-1].isdigit()
        ):
            start = int(wanted[6:-1])
            if start >= len(body):
                self._simple(416, b"", {"Content-Range": f"bytes */{len(body)}"})
                return
            status = 206
            extra["Content-Range"] = f"bytes {start}-{len(body) - 1}/{len(body)}"
        # Where this response stops early (absolute offsets into the body).
        stop: int | None = route.truncate_at
        if route.die_once_at is not None and nth == 1:
            stop = route.die_once_at if stop is None else min(stop, route.die_once_at)
        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "none" if route.ignore_range else "bytes")
        self.send_header("ETag", route.etag or "")
        self.send_header("Last-Modified", route.last_modified)
        for name, value in {**extra, **route.headers}.items():
            self.send_header(name, value)
        if route.no_length:
            self.send_header("Connection", "close")
            self.close_connection = True
        else:
            length = route.content_length
            self.send_header("Content-Length", str(len(body) - start if length is None else length))
        self.end_headers()
        if not send_body:
            return
        end = len(body) if stop is None else max(start, min(stop, len(body)))
        view = memoryview(body)[start:end]
        try:
            for offset in range(0, len(view), 64 * 1024):
                self.wfile.write(view[offset : offset + 64 * 1024])
            self.wfile.flush()
        except OSError:  # the client gave up (e.g. a size cap): fine
            self.close_connection = True
            return
        if stop is not None and end < len(body):
            self._drop()
        elif route.no_length:
            self._drop(clean=True)
        elif route.content_length is not None and route.content_length != len(body) - start:
            self._drop()  # the body does not match what the header said: no keep-alive

    def _simple(self, status: int, body: bytes, headers: Mapping[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            with suppress(OSError):
                self.wfile.write(body)

    def _drop(self, clean: bool = False) -> None:
        """Close the connection now: abruptly (no TLS close_notify) unless `clean`."""
        self.close_connection = True
        conn = self.connection
        with suppress(OSError, ValueError):
            if clean and isinstance(conn, ssl.SSLSocket):
                conn.unwrap()
            conn.shutdown(socket.SHUT_RDWR)


class _HTTPServer(http.server.ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False

    def __init__(self, owner: Server, context: ssl.SSLContext | None) -> None:
        self.owner = owner
        self.context = context
        super().__init__(("127.0.0.1", 0), _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        # The TLS handshake happens here, in the connection's thread, so a client that never
        # finishes it (or rejects our certificate) cannot stall the accept loop.
        if self.context is not None:
            try:
                request = self.context.wrap_socket(request, server_side=True)
            except (OSError, ssl.SSLError) as exc:
                if not self.owner._stopping:
                    self.owner.tls_errors.append(str(exc))
                return
        self.owner._opened(request)
        try:
            super().finish_request(request, client_address)
        finally:
            self.owner._closed(request)
            if self.context is not None:  # shutdown_request() closes only the raw socket
                with suppress(OSError):
                    request.shutdown(socket.SHUT_RDWR)
                request.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-response is part of the tests


class Server:
    """A running loopback server; see the module docstring."""

    def __init__(
        self, files: Mapping[str, bytes | Route] | None = None, *, tls: bool = True
    ) -> None:
        self.tls = tls
        self.routes: dict[str, Route] = {}
        self.requests: list[Request] = []
        self.tls_errors: list[str] = []
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()
        self._open: set[Any] = set()
        self._tmp: Any = None
        self.ca: trustme.CA | None = None
        self.ca_pem: Path | None = None
        context = None
        if tls:
            import tempfile

            self.ca = trustme.CA()
            cert = self.ca.issue_cert(*HOSTS)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            cert.configure_cert(context)
            self._tmp = tempfile.TemporaryDirectory(prefix="modelseal-ca-")
            self.ca_pem = Path(self._tmp.name) / "ca.pem"
            self.ca.cert_pem.write_to_path(str(self.ca_pem))
        self._httpd = _HTTPServer(self, context)
        self.port: int = self._httpd.server_address[1]
        for path, item in (files or {}).items():
            self.add(path, item)
        self._stopping = False
        self._thread = threading.Thread(target=self._serve, name="httpserver", daemon=True)
        self._thread.start()

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        """The URL of `path`; `host` may be "localhost" (another origin, same server)."""
        shown = f"[{host}]" if ":" in host else host
        return f"{self.scheme}://{shown}:{self.port}{path}"

    def add(self, path: str, body: bytes | Route = b"", **faults: Any) -> str:
        """Serve `body` (or a ready Route) at `path` with the given faults; returns its URL."""
        route = body if isinstance(body, Route) else Route(body=body, **faults)
        with self._lock:
            self.routes[path] = route
            self._counts.pop(path, None)
        return self.url(path)

    def count(self, path: str) -> int:
        """How many requests reached `path` (query strings included in the path if sent)."""
        with self._lock:
            return sum(1 for r in self.requests if r.path == path)

    def requests_for(self, path: str) -> list[Request]:
        with self._lock:
            return [r for r in self.requests if r.path == path]

    def _record(self, request: Request) -> int:
        """Log the request; return its number (1-based) for its route key."""
        key = request.path if request.path in self.routes else request.path.split("?", 1)[0]
        with self._lock:
            self.requests.append(request)
            self._counts[key] = self._counts.get(key, 0) + 1
            return self._counts[key]

    def _opened(self, sock: Any) -> None:
        with self._lock:
            self._open.add(sock)

    def _closed(self, sock: Any) -> None:
        with self._lock:
            self._open.discard(sock)

    def _serve(self) -> None:
        # handle_request() blocks in accept until a client comes: no polling interval to wait
        # out at shutdown (serve_forever would poll every 0.5 s). close() wakes it up.
        while not self._stopping:
            self._httpd.handle_request()

    def close(self) -> None:
        self._stopping = True
        with suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=5):
            pass
        self._thread.join()
        with self._lock:
            still_open = list(self._open)
        for sock in still_open:  # keep-alive connections a client left open
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@contextmanager
def serve(
    files: Mapping[str, bytes | Route] | None = None, *, tls: bool = True
) -> Iterator[Server]:
    """Run a server for the duration of the block."""
    server = Server(files, tls=tls)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def https_server(monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """An HTTPS server whose CA is trusted through SSL_CERT_FILE (as a private CA would be)."""
    with serve() as server:
        assert server.ca_pem is not None
        monkeypatch.setenv("SSL_CERT_FILE", str(server.ca_pem))
        monkeypatch.delenv("SSL_CERT_DIR", raising=False)
        yield server


@pytest.fixture
def http_server() -> Iterator[Server]:
    """A plain-HTTP server on loopback (for the allow_http_loopback paths)."""
    with serve(tls=False) as server:
        yield server


__all__ = ["HOSTS", "Request", "Route", "Server", "http_server", "https_server", "serve"]
