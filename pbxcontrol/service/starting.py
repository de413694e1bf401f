"""Starting without the database (SPEC §12): wait for it with a growing pause, and meanwhile
answer HTTP on the service's socket with code 503.

The process listens at once; while the database does not answer, a small waitress server of
its own (two threads, on a copy of the listening socket) answers every API function and
stream with the envelope's code 503 ("The database is unreachable."), `/health` with HTTP 503
and `/metrics` with `pbxcontrol_database_up 0`. Once the database answers, the API is built
(its plugins' start-up checks need the database), this server stops — its threads joined, so
the API workers can still be forked from a process without threads — and the real server
takes the socket over; connections arriving meanwhile wait in the socket's backlog.

The handover never cuts a response: this server answers one request per connection
(`Connection: close`, so no keep-alive connection sits idle on it), and when it stops it first
stops accepting, then lets each connection it has accepted finish its request (at most
DRAIN seconds), and only then closes them.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import orjson
from sqlalchemy import Engine, make_url
from waitress.channel import HTTPChannel
from waitress.server import create_server
from waitress.task import WSGITask
from waitress.wasyncore import close_all

from pbxcontrol.http.envelope import ApiError, error, unreachable
from pbxcontrol.service import notify

log = logging.getLogger("pbxcontrol")

#: Pauses between tries (seconds): growing, at most 6 s, so that with a try that waits out
#: the connect timeout (3 s) and the build the service is back within 10 s of the database.
PAUSES = (0.5, 1.0, 2.0, 4.0, 6.0)
#: Seconds a connection accepted before the handover gets to finish its request; one whose
#: client sends nothing meanwhile is closed then (the service must be back within 10 s).
DRAIN = 3.0
JSON = "application/json; charset=utf-8"
METRICS = (
    b"# HELP pbxcontrol_database_up 1 when the database answers\n"
    b"# TYPE pbxcontrol_database_up gauge\npbxcontrol_database_up 0.0\n"
)


def pauses() -> Iterator[float]:
    yield from PAUSES
    while True:
        yield PAUSES[-1]


def masked(engine: Engine) -> str:
    """The database URL for a log line: no password."""
    return make_url(engine.url).render_as_string(hide_password=True)


def sleep(stop: threading.Event, seconds: float) -> bool:
    """Wait `seconds` between tries; False when `stop` was set meanwhile. Under a systemd
    watchdog the waiting process pings it: it is alive, only its database is not."""
    pinging = notify.watchdog_interval() is not None
    deadline = time.monotonic() + seconds
    while not stop.is_set() and (left := deadline - time.monotonic()) > 0:
        if pinging:
            notify.notify("WATCHDOG=1")
        stop.wait(min(1.0, left))
    return not stop.is_set()


def unavailable_app(environ: dict[str, Any], start_response: Callable) -> Iterable[bytes]:
    """The WSGI app of the waiting server."""
    path = environ.get("PATH_INFO", "")
    if path.startswith(("/api/json", "/api/stream")):
        status, kind, body = "200 OK", JSON, error(unreachable())
    elif path == "/health":
        payload = {
            "status": "fail",
            "database": "unreachable",
            "machines": {},
            "problems": ["the database does not answer"],
        }
        status, kind, body = "503 Service Unavailable", JSON, orjson.dumps(payload)
    elif path == "/metrics":
        status, kind, body = "200 OK", "text/plain; version=0.0.4; charset=utf-8", METRICS
    else:
        status, kind, body = "503 Service Unavailable", JSON, error(ApiError(503))
    start_response(
        status,
        [("Content-Type", kind), ("Cache-Control", "no-store"), ("Content-Length", str(len(body)))],
    )
    return [body]


class OneRequestTask(WSGITask):
    """A response that closes its connection (`Connection: close`)."""

    def build_response_header(self):
        self.set_close_on_finish()
        return super().build_response_header()


class OneRequestChannel(HTTPChannel):
    task_class = OneRequestTask


class WaitingServer:
    """Answers 503 on the service's socket until `close()` (in a thread of its own)."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock.dup()  # closed with this server; the service keeps the original
        self._server: Any = create_server(
            unavailable_app,
            sockets=[self._sock],
            threads=2,
            ident="pbxcontrol",
            channel_timeout=10,
            asyncore_use_poll=True,
        )
        self._server.channel_class = OneRequestChannel  # waitress's way to choose the channel
        self._thread = threading.Thread(target=self._server.run, name="waiting", daemon=True)
        self._thread.start()
        host, port = sock.getsockname()[:2]
        log.info("HTTP API answering 503 on http://%s:%s/ until the database answers", host, port)

    def close(self) -> None:
        """Stop accepting (new connections wait in the backlog for the real server), let each
        accepted connection finish its one request, then end every thread of this server."""
        server = self._server
        stopped = threading.Event()

        def stop_accepting() -> None:  # on the socket loop's thread: no accept after this
            server.accepting = False
            stopped.set()

        server.trigger.pull_trigger(stop_accepting)
        stopped.wait(5)
        deadline = time.monotonic() + DRAIN
        while server.active_channels and time.monotonic() < deadline:
            time.sleep(0.01)  # each channel closes itself once its response is written
        server.trigger.pull_trigger(lambda: close_all(server._map))
        self._thread.join(5)
        server.task_dispatcher.shutdown(timeout=5)
