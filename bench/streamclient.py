"""The stream bench's subscribers, in a process of their own (bench/stream.py starts it).

Standalone (no project imports). Reads one JSON line from stdin — {"address": [host, port],
"subscriptions": [[query, ...]]} — opens one SSE connection per query on one epoll set,
prints `ready` once every connection has its snapshot, and on `stop` (stdin) prints one JSON
line: {"seen": [[id, receipt time], ...], "cpu": seconds, "wall": seconds, "closed": n}.

Minimal work per chunk, so the figure is the server's: the receipt time is read once per
wake-up of epoll (before any socket is read), and a chunk is only scanned for `id:` lines.
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import sys
import time

IDS = re.compile(rb"^id: (\d+)$", re.M)
STREAM = "/api/stream/calls/active/list/"


def main() -> None:
    order = json.loads(sys.stdin.readline())
    address = tuple(order["address"])
    selector = selectors.DefaultSelector()
    queries = order["subscriptions"]
    seen: list[tuple[int, float]] = []
    state = {"waiting": len(queries), "closed": 0}
    started, begun = time.process_time(), time.monotonic()
    for query in queries:  # reading as it connects, as real clients do
        sock = socket.create_connection(address)
        sock.sendall(f"GET {STREAM}?{query} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ, [b"", False])
        _read(selector, selector.select(0), seen, state)
    selector.register(sys.stdin, selectors.EVENT_READ, None)
    while True:
        events = selector.select(1.0)
        if any(key.data is None for key, _ in events):
            line = sys.stdin.readline()
            if not line or line.strip() == "stop":
                report = {"seen": seen, "closed": state["closed"]}
                report.update(cpu=time.process_time() - started, wall=time.monotonic() - begun)
                print(json.dumps(report), flush=True)
                return
        _read(selector, [(k, m) for k, m in events if k.data is not None], seen, state)


def _read(selector, events, seen: list[tuple[int, float]], state: dict) -> None:
    """Read every ready socket; the receipt time is the wake-up's, not the reading's."""
    now = time.time()
    for key, _ in events:
        last = key.data
        data = key.fileobj.recv(1 << 20)
        if not data:
            selector.unregister(key.fileobj)
            key.fileobj.close()
            state["closed"] += 1
            continue
        buffer = last[0] + data
        cut = buffer.rfind(b"\n") + 1
        last[0] = buffer[cut:]
        for match in IDS.finditer(buffer, 0, cut):
            seen.append((int(match.group(1)), now))
            if not last[1]:
                last[1] = True
                state["waiting"] -= 1
                if not state["waiting"]:
                    print("ready", flush=True)


if __name__ == "__main__":
    main()
