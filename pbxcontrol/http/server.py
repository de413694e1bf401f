"""A production threaded WSGI server (waitress) for the Bottle app, in one or more processes."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from pbxcontrol.http.envelope import ApiError, error

log = logging.getLogger("pbxcontrol.http")


class EnvelopeErrorTask(ErrorTask):
    """Requests waitress itself refuses (headers over the limit, a malformed request line or
    chunked body, an unsupported Transfer-Encoding) get the API's envelope too, not
    waitress's text/plain page. Waitress's detail is kept up to its first quote: what follows
    is a copy of what the client sent (a header line may hold a password)."""

    def execute(self):
        err = self.request.error
        detail = str(err.body).split('"')[0].strip().rstrip(".")
        message = f"{err.reason}: {detail}." if detail else f"{err.reason}."
        body = error(ApiError(err.code, [("", message)]))
        self.status = "200 OK"
        self.response_headers.append(("Content-Type", "application/json; charset=utf-8"))
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class EnvelopeChannel(HTTPChannel):
    error_task_class = EnvelopeErrorTask


def listen(host: str, port: int) -> socket.socket:
    """Bind now, so a busy port fails at start-up, and so worker processes can share it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(1024)
    except OSError:
        sock.close()
        raise
    return sock


def make_server(app, sock: socket.socket, threads: int):
    """Serve with `.run()`, stop with `.close()`."""
    sockets: dict = {}
    server = create_server(
        app,
        map=sockets,
        sockets=[sock],
        threads=threads,
        ident="pbxcontrol",
        # Limits the service enforces before any of our code runs.
        max_request_header_size=32 * 1024,
        max_request_body_size=1024 * 1024,
        channel_timeout=30,
        connection_limit=512,
        clear_untrusted_proxy_headers=True,
    )
    for dispatcher in sockets.values():
        if isinstance(dispatcher, BaseWSGIServer):
            dispatcher.channel_class = EnvelopeChannel
    host, port = sock.getsockname()[:2]
    log.info("HTTP API listening on http://%s:%s/api/json/", host, port)
    return server


def fork_workers(app, sock: socket.socket, threads: int, count: int, engine) -> list[int]:
    """`count` more processes serving the same socket: Python runs one thread at a time per
    process, so on a multi-core host the API scales with processes, not threads. Call before
    any thread is started; returns the children's pids."""
    pids = []
    for _ in range(count):
        pid = os.fork()
        if pid == 0:  # the worker: serve until SIGTERM/SIGINT, then leave without cleanup
            status = 1
            try:
                engine.dispose(close=False)  # never share the parent's database connections
                server = make_server(app, sock, threads)

                def stop(_signum, _frame):
                    raise KeyboardInterrupt

                signal.signal(signal.SIGTERM, stop)
                signal.signal(signal.SIGINT, stop)
                with contextlib.suppress(KeyboardInterrupt):
                    server.run()
                server.close()
                status = 0
            finally:
                os._exit(status)
        pids.append(pid)
    return pids


def stop_workers(pids: list[int], timeout: float = 15.0) -> None:
    import time

    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid in pids:
        while True:
            with contextlib.suppress(ChildProcessError):
                done, _ = os.waitpid(pid, os.WNOHANG)
                if done == 0 and time.monotonic() < deadline:
                    time.sleep(0.05)
                    continue
                if done == 0:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
            break
