"""The fleet bench's stream subscribers, in a process of their own (bench/fleet.py starts it).

Standalone (no project imports), like bench/streamclient.py. Reads one JSON line from stdin —
{"subscriptions": [[host, port, query, track], ...]} — opens one SSE connection per entry on
one epoll set, prints `ready` once every connection has its snapshot, and on `stop` (and on
`report`, going on) prints one JSON line: {"first": {uniqueid: receipt time}, "events": n,
"closed": n, "cpu": s, "wall": s}.
`first` holds, over the connections with `track` true, the first receipt of an upsert of each
leg (how the push latency is measured); the others only count their events. The receipt time
is read once per wake-up of epoll, before any socket is read.
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import sys
import time

EVENT = re.compile(rb"^id: \d+\n(?:event: (\w+)\n)?data: (.*)$", re.M)
UNIQUEID = re.compile(rb"\"uniqueid\" ?: ?\"([^\"]+)\"")
STREAM = "/api/stream/calls/active/list/"


class Connection:
    def __init__(self, track: bool) -> None:
        self.track = track
        self.rest = b""
        self.snapshot = False


def main() -> None:
    order = json.loads(sys.stdin.readline())
    selector = selectors.DefaultSelector()
    state = {"waiting": len(order["subscriptions"]), "closed": 0, "events": 0}
    first: dict[str, float] = {}
    started, begun = time.process_time(), time.monotonic()
    for host, port, query, track in order["subscriptions"]:
        sock = socket.create_connection((host, port))
        sock.sendall(f"GET {STREAM}?{query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, Connection(track))
        _read(selector, selector.select(0), first, state)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        events = selector.select(1.0)
        if any(key.data is None for key, _ in events):
            line = sys.stdin.readline()
            report = {"first": first, "events": state["events"], "closed": state["closed"]}
            report.update(cpu=time.process_time() - started, wall=time.monotonic() - begun)
            print(json.dumps(report), flush=True)
            if not line or line.strip() == "stop":
                return
        _read(selector, [(k, m) for k, m in events if k.data is not None], first, state)


def _read(selector, events, first: dict[str, float], state: dict) -> None:
    now = time.time()
    for key, _ in events:
        conn: Connection = key.data
        try:
            data = key.fileobj.recv(1 << 20)
        except BlockingIOError:
            continue
        except OSError:  # reset by the server: closed, and counted
            data = b""
        if not data:
            selector.unregister(key.fileobj)
            key.fileobj.close()
            state["closed"] += 1
            continue
        buffer = conn.rest + data
        cut = buffer.rfind(b"\n\n") + 2 if b"\n\n" in buffer else 0
        conn.rest = buffer[cut:]
        for match in EVENT.finditer(buffer, 0, cut):
            state["events"] += 1
            if not conn.snapshot:
                conn.snapshot = True
                state["waiting"] -= 1
                if not state["waiting"]:
                    print("ready", flush=True)
            elif conn.track and match.group(1) == b"upsert":
                leg = UNIQUEID.search(match.group(2))
                if leg is not None:
                    first.setdefault(leg.group(1).decode(), now)


if __name__ == "__main__":
    main()
