"""A production threaded WSGI server (waitress) for the Bottle app, in one or more processes."""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, create_server
from waitress.task import ErrorTask

from pbxcontrol.auth.proxy import ClientAddress
from pbxcontrol.http.api import METHODS
from pbxcontrol.http.body import ZERO_COPY_FROM, BytesBody
from pbxcontrol.http.envelope import ApiError, error
from pbxcontrol.streams import stream
from pbxcontrol.streams.hub import Hub
from pbxcontrol.streams.stream import PREFIX, StreamApi

log = logging.getLogger("pbxcontrol.http")
access_log = logging.getLogger("pbxcontrol.access")


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

    def write_soon(self, data):
        if isinstance(data, bytes) and len(data) >= ZERO_COPY_FROM:
            data = BytesBody(data)
        return super().write_soon(data)


class ApiChannel(EnvelopeChannel):
    """A connection that can become a live stream (pbxcontrol.streams.stream): a request under
    /api/stream/ is opened on a worker thread like any request; once it opens, its socket
    leaves waitress for the process's hub (pbxcontrol.streams.hub), which owns it from then on
    (its epoll set, its writes), so no thread waits on a stream and waitress's socket loop —
    which rebuilds its poll set from every channel on each pass — never sees it again."""

    streams: StreamApi | None = None
    hub: Hub | None = None
    proxies: ClientAddress | None = None

    def service(self):
        request = self.requests[0]
        if self.hub is None or request.error or not request.path.startswith(PREFIX):
            return super().service()
        assert self.streams is not None
        version = "1.1" if request.version == "1.1" else "1.0"
        if request.command not in METHODS:
            address = self._client_address(request)
            access_log.info("%s %s %s 405", address, request.command, request.path)
            return self._answer(stream.method_not_allowed(version, request.command))
        opened = self.streams.open(
            request.command,
            request.path,
            request.query,
            request.headers.get("LAST_EVENT_ID", ""),
            self._client_address(request),
            full=self.hub.full,
        )
        if not isinstance(opened, stream.Opened):  # the envelope, or one snapshot: whole
            self._answer(stream.answer(version, opened))
        else:
            # Handed over on the socket loop's thread; until then the request is in flight,
            # so the loop neither reads nor writes this channel.
            head = stream.head(version)
            self.server.trigger.pull_trigger(lambda: self._hand_over(opened, head))

    def _answer(self, data: bytes) -> None:
        """A whole answer, then the connection closes. Written before the request is dropped:
        with no request in flight, the socket loop flushes without the buffer lock."""
        self.write_soon(data)
        self.close_when_flushed = True
        self._finished()
        self.server.pull_trigger()

    def _finished(self) -> None:
        with self.requests_lock:
            for queued in self.requests:
                queued.close()
            self.requests.clear()
        self.last_activity = time.time()

    def _hand_over(self, opened: stream.Opened, head: bytes) -> None:
        """(The socket loop's thread.) Out of waitress's map, the socket to the hub."""
        assert self.hub is not None
        self._finished()
        sock = self.socket
        self.del_channel()
        self.connected = False
        self.hub.join(sock, opened, head)

    def _client_address(self, request) -> str:
        peer = self.addr[0] if self.addr else ""
        if self.proxies is None:
            return peer
        return self.proxies.resolve(peer, request.headers.get("X_FORWARDED_FOR", ""))


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


def make_server(
    app,
    sock: socket.socket,
    threads: int,
    streams: StreamApi | None = None,
    proxies: ClientAddress | None = None,
    **hub_settings: Any,
) -> Server:
    """Serve with `.run()`, stop with `.close()`; with `streams`, also the live streams (their
    hub starts here, in the serving process: `hub_settings` are Hub's keyword arguments,
    `counted`, `commits`, `watch`, `stream_buffer`). With `proxies`, the client address is
    resolved from X-Forwarded-For when the peer is a trusted proxy (pbxcontrol.auth.proxy)."""
    sockets: dict = {}
    server = create_server(
        proxies.middleware(app) if proxies is not None else app,
        map=sockets,
        sockets=[sock],
        threads=threads,
        ident="pbxcontrol",
        # Limits the service enforces before any of our code runs.
        max_request_header_size=32 * 1024,
        max_request_body_size=1024 * 1024,
        channel_timeout=30,  # idle keep-alive connections; a stream writes every 10 s
        # Open streams leave waitress (the hub holds them); poll(), not select(), anyway.
        connection_limit=512 if streams is None else 4096,
        asyncore_use_poll=True,
        # With trusted proxies, their middleware clears the proxy headers (after reading them).
        clear_untrusted_proxy_headers=proxies is None,
    )
    listeners = [d for d in sockets.values() if isinstance(d, BaseWSGIServer)]
    channel_class: type[EnvelopeChannel] = EnvelopeChannel
    hub = None
    if streams is not None:
        hub = Hub(streams.api.engine, streams, **hub_settings)
        channel_class = type(
            "StreamingChannel",
            (ApiChannel,),
            {"streams": streams, "hub": hub, "proxies": proxies},
        )
        hub.start()
    for dispatcher in listeners:
        dispatcher.channel_class = channel_class  # waitress's way to choose the channel
    host, port = sock.getsockname()[:2]
    log.info("HTTP API listening on http://%s:%s/api/json/", host, port)
    return Server(server, hub)


@dataclass(frozen=True)
class Server:
    """The waitress server of the API's socket and the hub it hands streams to (None when
    this process serves no streams)."""

    waitress: Any
    hub: Hub | None

    def run(self) -> None:
        self.waitress.run()

    def close(self) -> None:
        self.waitress.close()

    @property
    def effective_port(self) -> int:
        return self.waitress.effective_port

    def trigger(self) -> Callable[[Callable[[], None]], None]:
        """Runs a thunk on waitress's socket loop, turning it once (the watchdog's probe)."""
        listener = self.waitress  # the server of one socket, or the first of several
        if not hasattr(listener, "trigger"):
            listener = next(d for d in listener.map.values() if hasattr(d, "trigger"))
        return listener.trigger.pull_trigger
