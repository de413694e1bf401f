"""The events websocket as the recorder reads it: the real AriClient against a local server that
frames messages as Asterisk may (many per read, cut anywhere, fragmented, pings, a close)."""

from __future__ import annotations

import base64
import hashlib
import random
import socket
import struct
import threading
from collections.abc import Callable

import pytest

from pbxcontrol.ari.client import AriClient, AriError
from pbxcontrol.ari.frames import FrameBuffer, FrameError, MessageTooBig

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def frame(payload: bytes, opcode: int = 0x1, fin: bool = True) -> bytes:
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        return struct.pack("!BB", first, size) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", first, 126, size) + payload
    return struct.pack("!BBQ", first, 127, size) + payload


class Server:
    """Accepts one websocket, then runs `script(conn)` on it; keeps what the client sent."""

    def __init__(self, script: Callable[[socket.socket], None]) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.received = b""
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(script,), daemon=True)
        self.thread.start()

    def client(self) -> AriClient:
        port = self.sock.getsockname()[1]
        # The websocket alone (the subscription's request: test_ari_subscription.py).
        url = f"http://127.0.0.1:{port}/ari"
        return AriClient(url, "u", "p", "app", subscribe_all=False, timeout=5)

    def _run(self, script: Callable[[socket.socket], None]) -> None:
        conn, _ = self.sock.accept()
        request = b""
        while b"\r\n\r\n" not in request:
            request += conn.recv(4096)
        key = next(
            line.split(b":", 1)[1].strip()
            for line in request.split(b"\r\n")
            if line.lower().startswith(b"sec-websocket-key")
        )
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest())
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Accept: " + accept + b"\r\n\r\n"
        )
        script(conn)
        conn.settimeout(1)
        try:
            while chunk := conn.recv(4096):
                self.received += chunk
        except OSError:
            pass
        self.done.set()
        conn.close()
        self.sock.close()


def read_all(stream, count: int) -> list[str]:
    return [m for m in (stream.recv(5) for _ in range(count)) if m is not None]


def test_a_burst_of_messages_cut_anywhere_arrives_whole_and_in_order():
    messages = [f'{{"n": {i}, "pad": "{"x" * (i * 37 % 300)}"}}' for i in range(500)]
    messages += ["é" * 40_000, "y" * 70_000]  # 2-byte and 8-byte lengths
    data = b"".join(frame(m.encode()) for m in messages)

    def script(conn: socket.socket) -> None:
        rng = random.Random(7)
        pos = 0
        while pos < len(data):
            step = rng.choice([1, 2, 3, 5, 100, 4000, 70_000])
            conn.sendall(data[pos : pos + step])
            pos += step

    server = Server(script)
    stream = server.client().open_events()
    assert read_all(stream, len(messages)) == messages
    stream.close()


def test_buffered_gives_the_messages_a_read_brought_without_waiting():
    """The reader takes, with each message `recv` returns, those the same read completed
    (recorder/reader.py checks its lease once for them): all of them, in order, none twice."""
    messages = [f'{{"n": {i}}}' for i in range(300)]
    data = b"".join(frame(m.encode()) for m in messages)
    server = Server(lambda conn: conn.sendall(data))
    stream = server.client().open_events()
    got: list[str] = []
    while len(got) < len(messages):
        first = stream.recv(5)
        assert first is not None
        got += [first, *stream.buffered()]
    assert got == messages
    assert stream.buffered() == [] and stream.recv(0.05) is None
    stream.close()


def test_fragments_are_joined_and_a_ping_between_them_is_answered():
    def script(conn: socket.socket) -> None:
        conn.sendall(
            frame(b'{"a": ', fin=False)
            + frame(b"hello", opcode=0x9)
            + frame(b"1", opcode=0x0, fin=False)
            + frame(b"}", opcode=0x0)
            + frame(b'{"b": 2}')
        )

    server = Server(script)
    stream = server.client().open_events()
    assert read_all(stream, 2) == ['{"a": 1}', '{"b": 2}']
    stream.close()
    server.done.wait(5)
    first = server.received[:2]
    assert first[0] == 0x80 | 0xA  # the pong came first, echoing the ping's payload
    mask = server.received[2:6]
    pong = bytes(b ^ mask[i % 4] for i, b in enumerate(server.received[6:11]))
    assert first[1] & 0x7F == 5 and pong == b"hello"


def test_messages_before_a_close_are_delivered_then_the_stream_ends():
    server = Server(lambda conn: conn.sendall(frame(b"1") + frame(b"2") + frame(b"", 0x8)))
    stream = server.client().open_events()
    assert read_all(stream, 2) == ["1", "2"]
    with pytest.raises(AriError, match="closed by Asterisk"):
        stream.recv(5)
    stream.close()


def test_a_quiet_socket_gives_none_and_a_dropped_one_an_error():
    gate = threading.Event()
    server = Server(lambda conn: gate.wait(5))
    stream = server.client().open_events()
    assert stream.recv(0.05) is None
    gate.set()
    with pytest.raises(AriError):
        stream.recv(5)
    stream.close()


def test_the_frame_buffer_keeps_a_cut_frame_and_refuses_broken_framing():
    frames = FrameBuffer()
    whole = frame(b"x" * 300)
    assert frames.feed(whole[:3]) == []
    assert frames.feed(whole[3:]) == [(0x1, b"x" * 300)]
    with pytest.raises(FrameError):
        frames.feed(frame(b"orphan", opcode=0x0))
    with pytest.raises(FrameError):
        FrameBuffer().feed(frame(b"", opcode=0x3))


def test_a_message_over_max_message_is_refused_from_its_header_not_buffered():
    """SPEC §12: a frame header announcing more than max_message bytes ends the connection
    at once (the recorder reconnects and resyncs), without reading the announced body."""
    frames = FrameBuffer(max_message=1000)
    assert frames.feed(frame(b"y" * 1000)) == [(0x1, b"y" * 1000)]  # up to the bound: fine
    huge = frame(b"z" * 70_000)
    with pytest.raises(MessageTooBig, match="over max_message"):
        frames.feed(huge[:10])  # the header alone: nothing of the body is awaited
    announced = struct.pack("!BBQ", 0x81, 127, 2**40)  # 1 TiB announced, nothing sent
    with pytest.raises(MessageTooBig):
        FrameBuffer(max_message=1000).feed(announced)
    fragments = FrameBuffer(max_message=1000)
    assert fragments.feed(frame(b"a" * 600, fin=False)) == []
    with pytest.raises(MessageTooBig):  # the fragments joined would be over it
        fragments.feed(frame(b"b" * 600, opcode=0x0))


def test_a_client_closes_the_websocket_on_a_message_over_max_message():
    def script(conn: socket.socket) -> None:
        conn.sendall(frame(b"small") + struct.pack("!BBQ", 0x81, 127, 2**33))

    server = Server(script)
    port = server.sock.getsockname()[1]
    client = AriClient(
        f"http://127.0.0.1:{port}/ari", "u", "p", "app", max_message=4096, subscribe_all=False
    )
    stream = client.open_events()
    assert stream.recv(5) == "small"
    with pytest.raises(AriError, match="over max_message"):
        stream.recv(5)
    stream.close()
