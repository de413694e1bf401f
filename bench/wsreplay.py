"""A stand-in Asterisk on 127.0.0.1 for bench/wsingest.py: ARI's REST calls a recorder makes at
connect, and an events websocket that replays recorded real events as fast as the socket takes.

    python -m bench.wsreplay --events N     (prints "ready PORT EVENTS LIVE", then a line
                                             "replay START END" per replay, monotonic seconds)

The stream is bench/ingest.py's `build_stream` (tests/recordings/*.jsonl, ids fresh per copy)
and a sentinel: a ChannelCreated left up at the end, so a client that shows the sentinel's
leg has applied everything before it. A replay starts when a client that has the events
websocket open asks `GET /ari/channels` (a recorder's reconcile; the bare reader asks it too),
and is written with one `sendall` of frames built beforehand. Every process it runs in is
started and stopped by bench/wsingest.py, by its pid.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.ingest import RECORDINGS, build_stream  # noqa: E402

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
SENTINEL = "sentinel.1"


def recorded_info() -> str:
    path = sorted(RECORDINGS.glob("*.jsonl"))[0]
    for line in path.open():
        record = json.loads(line)
        if record["type"] == "info":
            return json.dumps(record["data"])
    raise RuntimeError(f"no info record in {path.name}")


def sentinel_event(stream: list[str]) -> str:
    """The stream's first ChannelCreated, as a channel of its own that is never destroyed."""
    for text in stream:
        event = json.loads(text)
        if event.get("type") == "ChannelCreated":
            channel = event["channel"]
            channel["id"] = SENTINEL
            channel["name"] = "PJSIP/sentinel-00000001"
            channel.setdefault("channelvars", {})["CHANNEL(linkedid)"] = SENTINEL
            return json.dumps(event)
    raise RuntimeError("no ChannelCreated in the recordings")


def live_after(stream: list[str]) -> int:
    """Channels the stream leaves up: seen in an event, never destroyed."""
    seen: set[str] = set()
    gone: set[str] = set()
    for text in stream:
        event = json.loads(text)
        for key in ("channel", "peer", "caller"):
            channel = event.get(key)
            if isinstance(channel, dict) and "id" in channel:
                seen.add(channel["id"])
        if event.get("type") == "ChannelDestroyed":
            gone.add(event["channel"]["id"])
    return len(seen - gone)


def frame(payload: bytes, opcode: int = 0x1) -> bytes:
    """One unmasked server frame (RFC 6455)."""
    size = len(payload)
    if size < 126:
        head = struct.pack("!BB", 0x80 | opcode, size)
    elif size < 1 << 16:
        head = struct.pack("!BBH", 0x80 | opcode, 126, size)
    else:
        head = struct.pack("!BBQ", 0x80 | opcode, 127, size)
    return head + payload


class ReplayServer:
    def __init__(self, stream: list[str]) -> None:
        self.blob = b"".join(frame(text.encode()) for text in stream)
        self.info = recorded_info().encode()
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.lock = threading.Lock()
        self.pending: socket.socket | None = None  # an events websocket not yet replayed to

    def serve(self) -> None:
        while True:
            conn, _ = self.sock.accept()
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn: socket.socket) -> None:
        reader = conn.makefile("rb")
        try:
            while True:
                request = reader.readline().decode("latin-1").split()
                if len(request) < 2:
                    return
                headers = {}
                while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                    name, _, value = line.decode("latin-1").partition(":")
                    headers[name.strip().lower()] = value.strip()
                path = request[1].split("?")[0]
                if path == "/ari/events" and "sec-websocket-key" in headers:
                    self._websocket(conn, reader, headers["sec-websocket-key"])
                    return
                self._rest(conn, path)
        except OSError:
            pass
        finally:
            conn.close()

    def _rest(self, conn: socket.socket, path: str) -> None:
        status, body = "404 Not Found", b'{"message": "Not found"}'
        if path == "/ari/asterisk/info":
            status, body = "200 OK", self.info
        elif path == "/ari/channels":
            status, body = "200 OK", b"[]"
        elif path.endswith("/subscription"):  # the recorder's channel:,bridge: subscription
            status, body = "200 OK", b"{}"
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        conn.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        if path == "/ari/channels":
            with self.lock:
                ws, self.pending = self.pending, None
            if ws is not None:
                self._replay(ws)

    def _replay(self, ws: socket.socket) -> None:
        start = time.monotonic()
        ws.sendall(self.blob)
        print(f"replay {start:.6f} {time.monotonic():.6f}", flush=True)

    def _websocket(self, conn: socket.socket, reader, key: str) -> None:
        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        with self.lock:  # before the client can know it is connected
            self.pending = conn
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        while (got := _read_frame(reader)) is not None:  # answer pings, end at a close
            opcode, payload = got
            if opcode == 0x9:
                conn.sendall(frame(payload, 0xA))
            elif opcode == 0x8:
                conn.sendall(frame(b"", 0x8))
                return


def _read_frame(reader) -> tuple[int, bytes] | None:
    head = reader.read(2)
    if len(head) < 2:
        return None
    opcode, size = head[0] & 0x0F, head[1] & 0x7F
    if size == 126:
        size = struct.unpack("!H", reader.read(2))[0]
    elif size == 127:
        size = struct.unpack("!Q", reader.read(8))[0]
    mask = reader.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = reader.read(size)
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    args = parser.parse_args()
    stream = build_stream(args.events)
    stream.append(sentinel_event(stream))
    server = ReplayServer(stream)
    print(f"ready {server.port} {len(stream)} {live_after(stream)}", flush=True)
    server.serve()


if __name__ == "__main__":
    main()
