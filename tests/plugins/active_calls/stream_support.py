"""Live-stream tests' tools: the real server in this process on loopback, an SSE client that
applies what it reads, and leg changes written through the recorder's own store path."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

from pbxcontrol.recorder import store
from pbxcontrol.recorder.live import Changes
from pbxcontrol.service import server as http_server

STREAM = "/api/stream/calls/active/list/"


@contextmanager
def serving(rt, threads: int = 4, **hub: Any) -> Iterator[tuple[str, int]]:
    """The runtime's app and streams served by waitress with the hub, as `pbxcontrol api`
    (`hub`: the hub's settings, make_server's `watch` and `stream_buffer`)."""
    sock = http_server.listen("127.0.0.1", 0)
    hub.setdefault("stream_buffer", rt.config.stream_buffer)
    server = http_server.make_server(rt.app, sock, threads, rt.streams, **hub)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        yield sock.getsockname()[:2]
    finally:
        server.hub.stop()
        server.close()
        thread.join(5)


def query(who: str = "acme", **params: str) -> str:
    credentials = [f"auth_username={who}", f"auth_password={who}-pass"] if who else []
    return ";".join(credentials + [f"{k}={quote(v, safe='')}" for k, v in params.items()])


class Client:
    """One SSE connection; `rows` is what a client applying every event holds."""

    def __init__(self, address, q: str, headers: dict[str, str] | None = None, path=STREAM):
        self.sock = socket.create_connection(address, timeout=10)
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.sock.sendall(f"GET {path}?{q} HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        self.buffer = b""
        self.head = self._read_until(b"\r\n\r\n")
        self.rows: dict[tuple[int, str], dict[str, Any]] = {}
        self.events: list[tuple[int | None, str, Any]] = []
        self.count: int | None = None
        self.comments: list[str] = []
        self.closed = False

    @property
    def status_line(self) -> str:
        return self.head.split("\r\n")[0]

    def header(self, name: str) -> str:
        for line in self.head.split("\r\n")[1:]:
            key, _, value = line.partition(":")
            if key.lower() == name.lower():
                return value.strip()
        return ""

    def body(self) -> bytes:
        """An answer that is not a stream: its whole body."""
        length = int(self.header("Content-Length"))
        while len(self.buffer) < length:
            self._recv()
        return self.buffer[:length]

    def envelope(self) -> dict:
        return json.loads(self.body())

    def _recv(self) -> None:
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise EOFError
        self.buffer += data

    def _read_until(self, mark: bytes) -> str:
        while mark not in self.buffer:
            self._recv()
        head, self.buffer = self.buffer.split(mark, 1)
        return head.decode()

    def read_event(self, timeout: float = 5.0) -> tuple[int | None, str, Any] | None:
        """The next event (applied to `rows`), a comment (None), or EOFError/timeout."""
        self.sock.settimeout(timeout)
        block = self._read_until(b"\n\n")
        fields: dict[str, str] = {}
        for line in block.split("\n"):
            if line.startswith(":"):
                self.comments.append(line)
                continue
            key, _, value = line.partition(": ")
            fields[key] = value
        if "event" not in fields:
            return None
        ident = int(fields["id"]) if "id" in fields else None
        data = json.loads(fields["data"])
        self.apply(fields["event"], data)
        self.events.append((ident, fields["event"], data))
        return ident, fields["event"], data

    def apply(self, kind: str, data: Any) -> None:
        if isinstance(data, dict) and set(data) == {"count"}:
            self.count = data["count"]
        elif kind == "snapshot":
            self.rows = {(r["machine"], r["uniqueid"]): r for r in data["data"]}
        elif kind == "upsert":
            self.rows[(data["machine"], data["uniqueid"])] = data
        elif kind == "remove":
            self.rows.pop((data["machine"], data["uniqueid"]), None)

    def read_until(self, condition, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition(self):
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("the stream did not reach the expected state")
            try:
                self.read_event(left)
            except TimeoutError:
                continue

    def listed(self) -> list[dict[str, Any]]:
        return sorted(self.rows.values(), key=lambda r: (r["start"], r["uniqueid"], r["machine"]))

    def close(self) -> None:
        self.sock.close()


def write_legs(rt, machine: int = 1, upsert=(), update=(), gone=()) -> None:
    """Rows inserted, updated and ended through the recorder's store (journal included)."""
    ended = [dict(row, ended=time.time()) for row in gone]
    changes = Changes(
        list(upsert), list(update), ended, [r["uniqueid"] for r in gone], lambda: None
    )
    with rt.sessions.begin() as session:
        store.write(changes, machine, session)
