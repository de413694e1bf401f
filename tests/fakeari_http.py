"""A tiny ARI over HTTP on 127.0.0.1 for the call-control tests: the real AriClient talks to it.

It answers `DELETE /ari/channels/{id}` as Asterisk 22 does (204 for a live channel, 404 for
one that is gone) and records every request it gets.
"""

from __future__ import annotations

import base64
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlsplit


class FakeAriHttp:
    def __init__(self, live: set[str] | None = None) -> None:
        self.live = set(live or ())
        self.deleted: list[str] = []  # channel ids, in the order the DELETEs arrived
        self.auth: list[str] = []  # "user:password" of each request
        self.delay = 0.0  # seconds before answering: a hung Asterisk
        self.status: int | None = None  # answer every request with this instead
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/ari"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _answer(self, method: str, path: str, authorization: str) -> int:
        time.sleep(self.delay)
        with self._lock:
            if authorization.startswith("Basic "):
                self.auth.append(base64.b64decode(authorization[6:]).decode())
            prefix = "/ari/channels/"
            if method != "DELETE" or not path.startswith(prefix):
                return 405
            channel = unquote(path[len(prefix) :])
            self.deleted.append(channel)
            if self.status is not None:
                return self.status
            if channel not in self.live:
                return 404
            self.live.discard(channel)
            return 204

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_DELETE(self) -> None:  # noqa: N802 (http.server's naming)
                path = urlsplit(self.path).path
                code = fake._answer("DELETE", path, self.headers.get("Authorization", ""))
                body = b"" if code == 204 else b'{"message": "Channel not found"}'
                self.send_response(code)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # quiet
                pass

        return Handler
