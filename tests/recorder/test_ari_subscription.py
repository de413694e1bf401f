"""How the recorder's events websocket is subscribed: the application alone on the websocket,
then every channel and bridge by REST before the stream is handed over; never `subscribeAll`
(its device-state subscription can deadlock Asterisk's ARI: tests/e2e/test_subscription.py)."""

from __future__ import annotations

import base64
import hashlib
import socket
import threading
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

from pbxcontrol.ari.client import AriClient, AriError

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Asterisk:
    """Answers the events websocket's upgrade and any REST request with `status`; keeps each
    request's line in order and whether the websocket was closed by the client."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.requests: list[str] = []
        self.websocket_closed = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def client(self, subscribe_all: bool = True) -> AriClient:
        url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/ari"
        return AriClient(url, "u", "p", "my app", subscribe_all=subscribe_all, timeout=5)

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        lines = request.split(b"\r\n")
        self.requests.append(lines[0].decode())
        key = [
            ln.split(b":", 1)[1].strip()
            for ln in lines
            if ln.lower().startswith(b"sec-websocket-key")
        ]
        if key:
            accept = base64.b64encode(hashlib.sha1(key[0] + GUID).digest())
            conn.sendall(
                b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
            )
            conn.settimeout(10)
            try:
                while conn.recv(4096):
                    pass
            except OSError:
                pass
            self.websocket_closed.set()
        else:
            body = b'{"name": "my app"}'
            conn.sendall(
                f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                + body
            )
        conn.close()

    def close(self) -> None:
        self.sock.close()


def test_the_websocket_names_the_application_then_every_channel_and_bridge_is_subscribed():
    asterisk = Asterisk(200)
    try:
        stream = asterisk.client().open_events()
        stream.close()
    finally:
        asterisk.close()
    websocket, subscription = asterisk.requests
    assert websocket == "GET /ari/events?app=my%20app HTTP/1.1"  # no subscribeAll
    method, target, _ = subscription.split(" ")
    parts = urlsplit(target)
    assert (method, unquote(parts.path)) == ("POST", "/ari/applications/my app/subscription")
    assert parse_qs(parts.query) == {"eventSource": ["channel:,bridge:"]}


def test_a_refused_subscription_is_an_unreachable_asterisk_and_closes_the_websocket():
    asterisk = Asterisk(404)
    try:
        with pytest.raises(AriError, match="subscription: HTTP 404"):
            asterisk.client().open_events()
        assert asterisk.websocket_closed.wait(5)
    finally:
        asterisk.close()


def test_without_subscribe_all_only_the_application_s_own_channels_are_asked_for():
    asterisk = Asterisk(500)  # a subscription request would fail the open
    try:
        asterisk.client(subscribe_all=False).open_events().close()
    finally:
        asterisk.close()
    assert asterisk.requests == ["GET /ari/events?app=my%20app HTTP/1.1"]
