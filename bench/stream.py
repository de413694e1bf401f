"""The live stream's fan-out: 1,000 SSE subscribers on one real `pbxcontrol api` process.

A real API process (processes = 1, SQLite); the subscribers are raw asyncio sockets in this
process (cheap to hold), spread over a handful of realistic views (system, reseller, two
customers, with names, sorted, a count) and, in a second run, all on one view. Changes are
written through the recorder's own write path (`store.write`, journal included) at a steady
rate; delivery is measured from the commit to each subscriber's receipt of the event with
that journal id. Also: the API process's RSS, and calls/active/list latency without and
with the subscribers (while the changes flow).
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench import common

SUBSCRIBERS = 1000
VIEWS = [  # (person, parameters): what wallboards and NOC screens ask for
    ("admin", "customer=system;names=1"),
    ("admin", "customer=system;sort=snumber"),
    ("reseller", "customer=recursive;recursive=1;names=1"),
    ("acme", "names=1"),
    ("acme", "direction=in_out"),
    ("beta", ""),
    ("reseller", "customer=recursive;count=1"),
]
PEOPLE = ("admin", "reseller", "acme", "beta")
TREE = {
    "customers": [
        {"id": 1, "name": "Root", "parent": None},
        {"id": 2, "name": "Reseller", "parent": 1},
        {"id": 3, "name": "Acme", "parent": 2},
        {"id": 4, "name": "Beta", "parent": 2},
    ],
    "people": [
        {"username": u, "password": f"{u}-pass", "customer": c, "role": r}
        for u, c, r in [
            ("admin", 1, "system owner"),
            ("reseller", 2, "reseller"),
            ("acme", 3, "administrator"),
            ("beta", 4, "user"),
        ]
    ],
    "directory": [{"customer": 3, "number": "1001", "name": "Alice"}],
}


def run(results: common.Results, quick: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        site = _Site(Path(tmp))
        try:
            _measure(results, site, VIEWS, "spread", quick)
            _measure(results, site, VIEWS[3:4], "one view", quick)
        finally:
            site.stop()


class _Site:
    def __init__(self, tmp: Path):
        self.db = f"sqlite:///{tmp / 'pbx.db'}"
        self.config = tmp / "pbxcontrol.ini"
        self.config.write_text(
            f"[database]\nurl = {self.db}\n[http]\nhost = 127.0.0.1\nport = 0\n"
            "processes = 1\nstreams_per_person = 100000\n[plugins]\nenabled = active_calls\n"
        )
        self.config.chmod(0o600)
        (tmp / "tree.json").write_text(json.dumps(TREE))
        for args in (["initdb"], ["provision", str(tmp / "tree.json")]):
            subprocess.run(self._cli(*args), check=True, capture_output=True)
        self.proc = subprocess.Popen(self._cli("api"), stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            match = re.search(r"listening on http://([\d.]+):(\d+)/", line)
            if match:
                self.address = (match.group(1), int(match.group(2)))
                break
        threading.Thread(target=self.proc.stderr.read, daemon=True).start()  # keep it drained
        from pbxcontrol.db.engine import make_engine, make_sessionmaker

        self.engine = make_engine(self.db)
        self.sessions = make_sessionmaker(self.engine)
        self.serial = 0
        self.legs: list[dict] = []
        for _ in range(200):
            self.change()

    def _cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), *args]

    def change(self) -> tuple[int, float]:
        """One leg starts (or, every other time, the oldest ends): (journal id, commit time)."""
        from pbxcontrol.db import journal
        from pbxcontrol.recorder import store
        from pbxcontrol.recorder.fields import LEG_INT_FIELDS, LEG_STRING_FIELDS
        from pbxcontrol.recorder.live import Changes

        self.serial += 1
        if self.serial > 200 and self.serial % 2:
            gone = self.legs.pop(0)
            changes = Changes([], [], [dict(gone, ended=time.time())], [gone["uniqueid"]], _no)
        else:
            row = {n: "" for n in LEG_STRING_FIELDS} | {n: 0 for n in LEG_INT_FIELDS}
            customer = 3 + self.serial % 2
            row.update(
                machine=1, uniqueid=f"{self.serial}.1", callid=f"{self.serial}.1",
                start=int(time.time()), status="Up", stype="phone", snumber="1001",
                scustomer=customer, dcustomer=customer, dnumber="1002", direction="internal",
            )  # fmt: skip
            self.legs.append(row)
            changes = Changes([row], [], [], [], _no)
        with self.sessions.begin() as session:
            store.write(changes, 1, session)
        committed = time.time()
        with self.engine.connect() as conn:
            return journal.head(conn)[0], committed

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.proc.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]

    def list_ms(self, runs: int) -> list[float]:
        url = "http://%s:%d/api/json/calls/active/list/?auth_username=acme;auth_password=acme-pass;names=1"
        return common.timed_ms(lambda: urllib.request.urlopen(url % self.address).read(), runs)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)
        self.engine.dispose()


def _no() -> None:
    pass


async def _subscriber(address, person: str, params: str, seen: dict, ready: list) -> None:
    reader, writer = await asyncio.open_connection(*address, limit=1 << 24)
    q = f"auth_username={person};auth_password={person}-pass;{params}"
    writer.write(f"GET /api/stream/calls/active/list/?{q} HTTP/1.1\r\nHost: b\r\n\r\n".encode())
    ready.append(1)
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"id: "):
            ident = int(line[4:])
            seen.setdefault(ident, []).append(time.time())


async def _cancel(tasks) -> None:
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


def _measure(results: common.Results, site: _Site, views, label: str, quick: bool) -> None:
    quiet = site.list_ms(50 if quick else 200)
    seen: dict[int, list[float]] = {}
    loop = asyncio.new_event_loop()
    ready: list[int] = []
    tasks = [
        loop.create_task(_subscriber(site.address, *views[i % len(views)], seen, ready))
        for i in range(SUBSCRIBERS)
    ]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    while len(ready) < SUBSCRIBERS:
        time.sleep(0.1)
    time.sleep(3)  # every snapshot delivered
    written: list[tuple[int, float]] = []
    stop = threading.Event()

    def writer() -> None:  # a steady 10 changes per second
        while not stop.is_set():
            written.append(site.change())
            stop.wait(0.1)

    threading.Thread(target=writer, daemon=True).start()
    busy = site.list_ms(50 if quick else 200)
    time.sleep(2)
    stop.set()
    time.sleep(2)
    rss = site.rss_mb()
    asyncio.run_coroutine_threadsafe(_cancel(tasks), loop).result(30)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()
    delays = [(t - at) * 1000 for ident, at in written for t in seen.get(ident, [])]
    name = f"stream.{label.replace(' ', '_')}."
    results.add(name + "deliveries", len(delays), "events", note=f"{len(written)} changes")
    results.add(name + "delivery p50", common.percentile(delays, 50), "ms")
    p99 = common.percentile(delays, 99)
    results.add(name + "delivery p99", p99, "ms", target="<= 250", met=p99 <= 250)
    results.add(name + "api RSS", rss, "MB", target="<= 250", met=rss <= 250)
    for p in (50, 99):
        value, base = common.percentile(busy, p), common.percentile(quiet, p)
        results.add(
            name + f"list p{p} with 1000 subscribers", value, "ms", baseline=base,
            baseline_name="list without subscribers", target="ratio <= 2",
            met=value / base <= 2,
        )  # fmt: skip
