"""Stand-in Asterisk machines for bench/fleet.py: per machine, an ARI on its own port of
127.0.0.1 (the events websocket, GET /channels, GET /asterisk/info, GET /channels/{id}/variable)
sending real recorded calls (bench/fleetcalls.py), its GET /channels always the channels of
what it has sent. Several machines per process (threads).

    python -m bench.fleetari --machines 1,2,3 --copies 34 --keep 2

prints `ready {"ports": {...}, "burst": {...}}`, then `connected M` when machine M's events
websocket opens (a newer one replaces an older one, as in Asterisk) and `listed M` at each
GET /channels. Commands on stdin, one a line:
  burst                              every machine sends its backlog's setups at once
                                     (`burst-done {M: [start, end, events]}`)
  teardown                           ... and then its teardowns (`burst-done {...}`)
  blast                              both, back to back (`burst-done {...}`)
  poke                               the first machine sends one more call's setup (`poked`)
  busy SECONDS CALLS HOLD WARMUP     per machine CALLS concurrent calls of mean HOLD seconds:
                                     CALLS arrivals spread over WARMUP seconds, then Poisson
                                     arrivals at CALLS/HOLD a second, until SECONDS
  halt                               the busy hour stops sending now (`busy-done`)
  report                             one JSON line: ChannelCreated send times after the warmup
  quit
Events sent while no websocket is open are lost, as with a real Asterisk.
"""

from __future__ import annotations

import argparse
import heapq
import json
import random
import socket
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import fleetcalls  # noqa: E402
from bench.wsreplay import GUID, _read_frame, frame, recorded_info  # noqa: E402

CHUNK = 200  # burst events per state update and sendall
OUT = threading.Lock()


def say(line: str) -> None:
    with OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


class Machine:
    def __init__(self, number: int, backlog: tuple[list[str], list[str]], info: bytes) -> None:
        self.number = number
        self.backlog = [len(part) for part in backlog]
        scratch = fleetcalls.ChannelState()  # the burst's frames and changes, built ahead
        self.chunks = [
            [
                (len(texts), b"".join(frame(t.encode()) for t in texts), scratch.deltas(texts))
                for texts in (part[i : i + CHUNK] for i in range(0, len(part), CHUNK))
            ]
            for part in backlog
        ]
        self.info = info
        self.state = fleetcalls.ChannelState()
        self.lock = threading.Lock()  # the state and the current websocket
        self.ws: socket.socket | None = None
        self.wlock = threading.Lock()  # one writer of frames at a time
        self.sent = self.lost = 0
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    # -- sending --
    def send(self, texts: list[str]) -> bool:
        blob = b"".join(frame(t.encode()) for t in texts)
        return self.send_built(len(texts), blob, self.state.deltas(texts))

    def send_built(self, count: int, blob: bytes, deltas) -> bool:
        """The events, in the state first (Asterisk lists a channel before it tells)."""
        with self.lock:
            self.state.apply(deltas)
            ws = self.ws
        if ws is None:
            self.lost += count
            return False
        try:
            with self.wlock:
                ws.sendall(blob)
        except OSError:
            self.lost += count
            return False
        self.sent += count
        return True

    def send_backlog(self, part: int) -> tuple[float, float, int]:
        start = time.time()
        for chunk in self.chunks[part]:
            self.send_built(*chunk)
        return start, time.time(), self.backlog[part]

    # -- serving --
    def _accept(self) -> None:
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
                length = int(headers.get("content-length", "0") or 0)
                if length:
                    reader.read(length)
                path = request[1].split("?")[0]
                if path == "/ari/events" and "sec-websocket-key" in headers:
                    self._websocket(conn, reader, headers["sec-websocket-key"])
                    return
                self._rest(conn, request[0], path)
        except (OSError, ValueError):
            pass
        finally:
            conn.close()

    def _rest(self, conn: socket.socket, method: str, path: str) -> None:
        status, body = "404 Not Found", b'{"message": "Not found"}'
        if method == "GET" and path == "/ari/asterisk/info":
            status, body = "200 OK", self.info
        elif method == "GET" and path == "/ari/channels":
            with self.lock:
                status, body = "200 OK", self.state.listing()
            say(f"listed {self.number}")
        elif method == "POST" and path.endswith("/subscription"):  # channel:,bridge:
            status, body = "200 OK", b"{}"
        head = f"HTTP/1.1 {status}\r\nContent-Type: application/json\r\n"
        conn.sendall(head.encode() + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)

    def _websocket(self, conn: socket.socket, reader, key: str) -> None:
        import base64
        import hashlib

        accept = base64.b64encode(hashlib.sha1(key.encode() + GUID).digest()).decode()
        conn.sendall(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
        )
        with self.lock:
            old, self.ws = self.ws, conn
        if old is not None:  # Asterisk: a second websocket of the same app replaces the first
            old.close()
        say(f"connected {self.number}")
        try:
            while (got := _read_frame(reader)) is not None:  # answer pings, end at a close
                opcode, payload = got
                if opcode == 0x9:
                    with self.wlock:
                        conn.sendall(frame(payload, 0xA))
                elif opcode == 0x8:
                    with self.wlock:
                        conn.sendall(frame(b"", 0x8))
                    return
        finally:
            with self.lock:
                if self.ws is conn:
                    self.ws = None


class BusyHour:
    """The busy hour of every machine of this process, from one scheduling thread."""

    def __init__(self, machines: list[Machine], seconds: float, calls: int, hold: float, warmup):
        self.machines = machines
        self.rng = random.Random(7)
        self.halted = threading.Event()
        self.created: dict[int, list[tuple[str, float]]] = {m.number: [] for m in machines}
        self.start = time.time()
        self.measure_from = self.start + warmup
        self.end = self.start + seconds
        self.heap: list[tuple[float, int, int, object]] = []
        self.seq = 0
        self.rate = calls / hold
        self.hold = hold
        self.sources = {m.number: fleetcalls.busy_calls(m.number) for m in machines}
        for m in machines:
            for _ in range(calls):
                self._push(self.start + self.rng.uniform(0, warmup), m.number, ("arrive",))
            self._push(self.start + warmup + self.rng.expovariate(self.rate), m.number, ("next",))

    def _push(self, when: float, machine: int, what: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, machine, what))

    def run(self) -> None:
        by_number = {m.number: m for m in self.machines}
        while self.heap and not self.halted.is_set():
            when, _, number, what = self.heap[0]
            if when >= self.end:
                break
            delay = when - time.time()
            if delay > 0:
                self.halted.wait(min(delay, 0.05))
                continue
            heapq.heappop(self.heap)
            self._do(by_number[number], when, what)
        say("busy-done")

    def _do(self, machine: Machine, when: float, what: tuple) -> None:
        kind = what[0]
        if kind == "next":
            self._push(when + self.rng.expovariate(self.rate), machine.number, ("next",))
            kind = "arrive"
        if kind == "arrive":
            call, tag = next(self.sources[machine.number])
            for offset, text in call.steps(tag, "setup"):
                self._push(when + offset, machine.number, ("event", text))
            ends = when + call.setup[-1][0] + self.rng.expovariate(1 / self.hold)
            for offset, text in call.steps(tag, "teardown"):
                self._push(ends + offset, machine.number, ("event", text))
            return
        text = what[1]
        machine.send([text])
        if '"type":"ChannelCreated"' in text[:40] and time.time() >= self.measure_from:
            channel = json.loads(text)["channel"]["id"]
            self.created[machine.number].append((channel, time.time()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machines", required=True, help="comma-separated machine numbers")
    parser.add_argument("--copies", type=int, default=34, help="CALL_SET copies per backlog")
    parser.add_argument("--keep", type=int, default=2, help="copies the backlog leaves up")
    args = parser.parse_args()
    info = recorded_info().encode()
    numbers = [int(n) for n in args.machines.split(",")]
    machines = [Machine(n, fleetcalls.burst(n, args.copies, args.keep), info) for n in numbers]
    ready = {
        "ports": {m.number: m.port for m in machines},
        "burst": {m.number: m.backlog for m in machines},
    }
    say("ready " + json.dumps(ready))
    busy: BusyHour | None = None
    busy_source = fleetcalls.busy_calls(machines[0].number, "p")
    for line in sys.stdin:
        words = line.split()
        if not words:
            continue
        if words[0] in ("burst", "teardown"):
            say("burst-done " + json.dumps(_burst(machines, int(words[0] == "teardown"))))
        elif words[0] == "blast":  # both parts, back to back
            first = _burst(machines, 0)
            last = _burst(machines, 1)
            both = {m: (first[m][0], last[m][1], first[m][2] + last[m][2]) for m in first}
            say("burst-done " + json.dumps(both))
        elif words[0] == "poke":  # one more call on the first machine: the data changed
            call, tag = next(busy_source)
            machines[0].send([text for _, text in call.steps(tag, "setup")])
            say("poked")
        elif words[0] == "busy":
            seconds, calls, hold, warmup = (float(w) for w in words[1:5])
            busy = BusyHour(machines, seconds, int(calls), hold, warmup)
            threading.Thread(target=busy.run, daemon=True).start()
        elif words[0] == "halt" and busy is not None:
            busy.halted.set()
        elif words[0] == "report":
            created = busy.created if busy else {}
            sent = {m.number: [m.sent, m.lost] for m in machines}
            say("report " + json.dumps({"created": created, "sent": sent}))
        elif words[0] == "quit":
            return


def _burst(machines: list[Machine], part: int) -> dict[int, tuple[float, float, int]]:
    done: dict[int, tuple[float, float, int]] = {}

    def one(machine: Machine) -> None:
        done[machine.number] = machine.send_backlog(part)

    threads = [threading.Thread(target=one, args=(m,)) for m in machines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return done


if __name__ == "__main__":
    main()
