"""The fleet bench's stream subscribers, in a process of their own (bench/fleet.py starts it).

Standalone (no project imports), like bench/streamclient.py. Reads one JSON line from stdin —
{"subscriptions": [[host, port, query, track], ...]} — opens one SSE connection per entry on
one epoll set, prints `ready` once every connection has its snapshot (one refused before its
snapshot, e.g. a 503 while the API's password-check slots are all busy as 1,000 subscribers
arrive at once, SPEC §13, is opened again after a pause, as a wallboard would), and on `stop`
(and on `report`, going on) prints one JSON line: {"first": {uniqueid: receipt time},
"gone": {...}, "events": n, "closed": n, "cpu": s, "wall": s}.
`first` holds, over the connections with `track` true, the first receipt of an upsert of each
leg (how the push latency is measured), `gone` the first receipt of its remove (the lag part,
bench/load.py); the others only count their events. The receipt time
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
    def __init__(self, order: list, track: bool) -> None:
        self.order = order  # [host, port, query, track]: to open it again
        self.track = track
        self.rest = b""
        self.snapshot = False


def main() -> None:
    order = json.loads(sys.stdin.readline())
    selector = selectors.DefaultSelector()
    state: dict = {"waiting": len(order["subscriptions"]), "closed": 0, "events": 0}
    first: dict[str, float] = {}
    state["gone"] = {}
    started, begun = time.process_time(), time.monotonic()
    state["again"] = []
    for subscription in order["subscriptions"]:
        _open(selector, subscription)
        _read(selector, selector.select(0), first, state)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        events = selector.select(1.0 if not state["again"] else 0.2)
        again, state["again"] = state["again"], []
        for subscription in again:
            _open(selector, subscription)
        if any(key.data is None for key, _ in events):
            line = sys.stdin.readline()
            report = {"first": first, "gone": state["gone"], "events": state["events"],
                      "closed": state["closed"], "refused": state.get("refused", 0)}  # fmt: skip
            report.update(cpu=time.process_time() - started, wall=time.monotonic() - begun)
            print(json.dumps(report), flush=True)
            if not line or line.strip() == "stop":
                return
        _read(selector, [(k, m) for k, m in events if k.data is not None], first, state)


def _open(selector, subscription: list) -> None:
    host, port, query, track = subscription
    sock = socket.create_connection((host, port))
    sock.sendall(f"GET {STREAM}?{query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    sock.setblocking(False)
    selector.register(sock, selectors.EVENT_READ, Connection(subscription, track))


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
            if conn.snapshot:
                state["closed"] += 1
            else:
                state["refused"] = state.get("refused", 0) + 1
                state["again"].append(conn.order)
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
            elif conn.track and match.group(1) in (b"upsert", b"remove"):
                leg = UNIQUEID.search(match.group(2))
                if leg is not None:
                    seen = first if match.group(1) == b"upsert" else state["gone"]
                    seen.setdefault(leg.group(1).decode(), now)


if __name__ == "__main__":
    main()
