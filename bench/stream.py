"""The live stream's fan-out: 1,000 SSE subscribers on one real `pbxcontrol api` process.

A real API process (processes = 1, SQLite); the subscribers are plain sockets on one epoll
set in a process of their own at nice 10 (bench/streamclient.py: receipt time read once per
wake-up, chunks only scanned for `id:`; real subscribers are on other machines, and on these
2 cores its bursts would otherwise be charged to the list's latency), spread over 7
realistic views (system with names, system sorted, reseller's subtree with names, a customer
with names, the same filtered by direction, another customer, the reseller's count) and, in
a second run, all on one view (a customer with names). Changes are written through the
recorder's own write path (`store.write`, journal included) at a steady 10/s; delivery is
measured from the commit to each subscriber's receipt of the event with that journal id.
Also: the API process's RSS (peak of samples while the changes flow), and
calls/active/list latency with the subscribers, against the same without them just before
and just after (the changes flowing throughout).
"""

from __future__ import annotations

import json
import os
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
#: The subscribers' process's niceness (BENCH_STREAM_NICE=0: on a par with the server; then,
#: on 2 cores, its bursts of reading count against the list's latency).
NICE = os.environ.get("BENCH_STREAM_NICE", "10")
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
        from pbxcontrol.legfields import LEG_INT_FIELDS, LEG_STRING_FIELDS
        from pbxcontrol.recorder import store
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


class _Writer:
    """A steady 10 changes per second from this process, for the whole measurement."""

    def __init__(self, site: _Site):
        self.site = site
        self.written: list[tuple[int, float]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            self.written.append(self.site.change())
            self.stop.wait(0.1)

    def close(self) -> list[tuple[int, float]]:
        self.stop.set()
        self.thread.join(10)
        return self.written


def _subscribe(site: _Site, views) -> subprocess.Popen:
    """The subscribers' process (bench/streamclient.py), once every snapshot arrived."""
    queries = [
        f"auth_username={who};auth_password={who}-pass;{params}"
        for who, params in (views[i % len(views)] for i in range(SUBSCRIBERS))
    ]
    client = subprocess.Popen(
        ["nice", "-n", NICE, sys.executable, str(Path(__file__).with_name("streamclient.py"))],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert client.stdin is not None and client.stdout is not None
    client.stdin.write(json.dumps({"address": site.address, "subscriptions": queries}) + "\n")
    client.stdin.flush()
    if client.stdout.readline().strip() != "ready":
        raise RuntimeError("the subscribers did not all get their snapshot")
    return client


def _unsubscribe(client: subprocess.Popen) -> dict:
    out, _ = client.communicate("stop\n", timeout=60)
    return json.loads(out)


def _measure(results: common.Results, site: _Site, views, label: str, quick: bool) -> None:
    """List latency without subscribers, with them, without again (changes flowing all the
    while, so only the subscribers differ); delivery of the changes made meanwhile."""
    runs = 200 if quick else 1000  # p99 of 1,000: the 10th slowest, not the 2nd
    writer = _Writer(site)
    try:
        quiet = site.list_ms(runs // 2)
        client = _subscribe(site, views)
        time.sleep(1)
        first = len(writer.written)
        rss = [site.rss_mb()]
        busy = site.list_ms(runs)
        for _ in range(8):  # the RSS while the changes keep flowing to everyone
            time.sleep(0.25)
            rss.append(site.rss_mb())
        measured = writer.written[first:]
        time.sleep(1)  # the last changes delivered
        report = _unsubscribe(client)
        time.sleep(1)
        quiet += site.list_ms(runs // 2)
    finally:
        writer.close()
    seen: dict[int, list[float]] = {}
    for ident, at in report["seen"]:
        seen.setdefault(ident, []).append(at)
    delays = [(t - at) * 1000 for ident, at in measured for t in seen.get(ident, [])]
    _report(results, f"stream.{label.replace(' ', '_')}.", delays, measured, max(rss), busy, quiet)
    results.add(
        f"stream.{label.replace(' ', '_')}.client cpu", report["cpu"] / report["wall"] * 100,
        "%", note=f"of one core: the subscribers' process (nice {NICE}), far from saturated",
    )  # fmt: skip


def _report(results, name, delays, measured, rss, busy, quiet) -> None:
    results.add(name + "deliveries", len(delays), "events", note=f"{len(measured)} changes")
    results.add(name + "delivery p50", common.percentile(delays, 50), "ms")
    p99 = common.percentile(delays, 99)
    results.add(name + "delivery p99", p99, "ms", target="<= 250", met=p99 <= 250)
    results.add(name + "api RSS", rss, "MB", target="<= 250", met=rss <= 250)
    for p in (50, 99):
        value, base = common.percentile(busy, p), common.percentile(quiet, p)
        results.add(
            name + f"list p{p} with 1000 subscribers", value, "ms", baseline=base,
            baseline_name="list without subscribers (before and after)", target="ratio <= 2",
            met=value / base <= 2,
        )  # fmt: skip
