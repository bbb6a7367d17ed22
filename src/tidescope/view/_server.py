"""The viewer's HTTP server: the packaged page and assets, and the JSON answers of ``_api``."""

from __future__ import annotations

import json
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Final
from urllib.parse import parse_qs, urlsplit

from tidescope.view._api import Api, NotFound

__all__ = ["ViewServer"]

HOST: Final = "127.0.0.1"

# Everything the page loads comes from this server: no CDN, no inline script, no framing.
_SECURITY_HEADERS: Final = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
        "form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}
_ASSETS: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/app.css": ("app.css", "text/css; charset=utf-8"),
    "/favicon.svg": ("favicon.svg", "image/svg+xml"),
}


class ViewServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer on 127.0.0.1 answering only requests addressed to it."""

    daemon_threads = True

    def __init__(self, api: Api, port: int = 0) -> None:
        super().__init__((HOST, port), _Handler)
        self.api = api
        self.port = int(self.server_address[1])
        # A page on another site can make the browser send requests here by a DNS name it
        # points at 127.0.0.1 (DNS rebinding): the Host header still names that site.
        self.hosts = frozenset({f"{HOST}:{self.port}", f"localhost:{self.port}"})

    @property
    def url(self) -> str:
        """The address to open."""
        return f"http://{HOST}:{self.port}/"


class _Handler(BaseHTTPRequestHandler):
    server: ViewServer
    protocol_version = "HTTP/1.1"
    server_version = "tidescope-view"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        pass  # the terminal shows the URL, not every request

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.headers.get("Host") not in self.server.hosts:
            self._send(HTTPStatus.MISDIRECTED_REQUEST, b"wrong host\n", "text/plain")
            return
        url = urlsplit(self.path)
        if url.path in _ASSETS:
            name, kind = _ASSETS[url.path]
            body = resources.files("tidescope.view").joinpath("static", name).read_bytes()
            self._send(HTTPStatus.OK, body, kind)
            return
        if not url.path.startswith("/api/"):
            self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
            return
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        try:
            answer = self._answer(url.path[5:], query)
        except NotFound as exc:
            self._json(HTTPStatus.NOT_FOUND, {"error": str(exc)})
        except (ValueError, KeyError) as exc:
            self._json(HTTPStatus.BAD_REQUEST, {"error": f"bad request: {exc}"})
        except Exception as exc:  # one bad query must not end the server
            print(f"tidescope view: {self.path}: {exc!r}", file=sys.stderr)
            self._json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": str(exc)})
        else:
            self._json(HTTPStatus.OK, answer)

    def _answer(self, name: str, q: dict[str, str]) -> Any:
        api = self.server.api
        offset = max(0, int(q.get("offset", 0)))
        if name == "summary":
            return api.summary()
        if name == "slices":
            return api.slices(int(q["t0"]), int(q["t1"]), int(q.get("width", 1000)))
        if name == "call":
            return api.call(int(q["id"]))
        if name == "exceptions":
            return api.exceptions(offset)
        if name == "search":
            return api.search(q.get("kind", "function"), q.get("q", ""), offset)
        if name == "requests":
            return api.requests(offset)
        raise NotFound(f"no endpoint /api/{name}")

    def _json(self, status: HTTPStatus, value: Any) -> None:
        body = json.dumps(value, default=repr, separators=(",", ":")).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, kind: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for key, value in _SECURITY_HEADERS.items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
