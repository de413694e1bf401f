"""One scale of bench/fleet.py running: the stand-ins, the recorders and standbys, the two
APIs and the subscribers on a fresh database; what the scenarios ask of them (the union
compared with both APIs, CPU, WAL, reopens, the subscribers' receipts); the database's waits.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import requests
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.pool import NullPool

from bench import fleetcalls
from bench.common import ROOT
from bench.fleetsite import Pbx, StandIns, _cpu, config, rss_mb

COPIES, KEEP = 34, 2  # 408 legs per machine at the burst's peak (20,400 at 50), 24 left up
STANDBY_EVERY = 5  # machines 1, 6, 11, ... have a standby recorder
SUBSCRIBERS, TRACKED = 1000, 20
VIEWS = [  # what wallboards and NOC screens ask for; the first TRACKED are timed
    ("admin", "customer=system;names=1"),
    ("reseller", "customer=recursive;recursive=1;names=1"),
    ("acme", "names=1"),
    ("beta", ""),
    ("reseller", "customer=recursive;count=1"),
]
LISTENING = re.compile(r"listening on http://[\d.]+:(\d+)/")
Key = tuple[int, str]


class Fleet:
    """`machines` stand-ins with their recorders on the (empty) database `url`; `direct`, the
    same database not through the processes' way to it (a cuttable proxy, in the tests)."""

    def __init__(
        self,
        workdir: Path,
        url: str,
        machines: int,
        *,
        copies: int = COPIES,
        keep: int = KEEP,
        subscribers: int = SUBSCRIBERS,
        direct: str = "",
    ) -> None:
        self.dir, self.url, self.m = workdir, url, machines
        self.direct = direct or url
        self.copies, self.keep, self.subscribers = copies, keep, subscribers
        self.stand_ins: StandIns
        self.apis: list[Pbx] = []
        self.recorders: list[Pbx] = []
        self.standbys: list[Pbx] = []
        self.clients: list[subprocess.Popen] = []
        self.reopened: dict[str, int] = {}
        self.api_rss: dict[str, float] = {}
        self.http = requests.Session()

    def start(self) -> None:
        self.stand_ins = StandIns(self.m, self.copies, self.keep)
        ari = {m: self.stand_ins.url(m) for m in range(1, self.m + 1)}
        self.apis = [Pbx(self.dir, f"api-{x}", "api", config(self.url, ari)) for x in "ab"]
        self.apis[0].cli("initdb")
        document = self.dir / "provision.json"  # the sandbox's, with the solo reseller
        document.write_text(json.dumps(fleetcalls.provisioning()))
        self.apis[0].cli("provision", str(document))
        for m, url in ari.items():
            own = config(self.url, {m: url})
            self.recorders.append(Pbx(self.dir, f"record-{m}", "record", own))
            if (m - 1) % STANDBY_EVERY == 0:
                self.standbys.append(Pbx(self.dir, f"standby-{m}", "record", own))
        started = time.monotonic()
        for group, ready in ((self.recorders, r"recording \(epoch"),
                             (self.standbys, "standby, holder")):  # fmt: skip
            for process in group:
                process.start()
            for process in group:
                process.wait_for(ready, 600)
        for api in self.apis:
            api.start()
            api.port = int(api.wait_for(LISTENING.pattern, 120).group(1))
        print(f"  {len(self.processes())} processes up in {time.monotonic() - started:.0f} s")
        self.converge({}, 120)
        self.api_rss["no streams"] = max(rss_mb(a.proc.pid) for a in self.apis if a.proc)
        if self.subscribers:
            self.subscribe()
            self.api_rss["with streams"] = max(rss_mb(a.proc.pid) for a in self.apis if a.proc)

    def processes(self) -> list[Pbx]:
        return self.recorders + self.standbys + self.apis

    def subscribe(self) -> None:
        """TRACKED system-view subscribers in a process of their own (their receipt times
        are the push latency: nothing else may delay their reading), the others niced in a
        second one; half of each on either API."""
        groups: list[list] = [[], []]
        for i in range(self.subscribers):
            api = self.apis[i % 2]
            who, params = VIEWS[0] if i < TRACKED else VIEWS[i % len(VIEWS)]
            query = f"auth_username={who};auth_password={who}-pass;{params}"
            groups[i >= TRACKED].append(["127.0.0.1", api.port, query, i < TRACKED])
        for group, nice in zip(groups, ("0", "10"), strict=True):
            if not group:
                continue
            client = subprocess.Popen(
                ["nice", "-n", nice, sys.executable, str(ROOT / "bench" / "fleetclient.py")],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            )  # fmt: skip
            assert client.stdin is not None and client.stdout is not None
            client.stdin.write(json.dumps({"subscriptions": group}) + "\n")
            client.stdin.flush()
            if client.stdout.readline().strip() != "ready":
                raise RuntimeError("the subscribers did not all get their snapshot")
            self.clients.append(client)

    def subscriber_report(self) -> dict:
        """The tracked subscribers' receipts so far."""
        client = self.clients[0]
        assert client.stdin is not None and client.stdout is not None
        client.stdin.write("report\n")
        client.stdin.flush()
        return json.loads(client.stdout.readline())

    # -- the APIs against the union --
    def list(self, api: Pbx, who: str, **params: str) -> list[dict]:
        query = {"auth_username": who, "auth_password": f"{who}-pass", **params}
        url = f"http://127.0.0.1:{api.port}/api/json/calls/active/list/"
        body = self.http.get(url, params=query, timeout=120).json()
        if "data" not in body:
            raise RuntimeError(f"{api.name}: {body}")
        return body["data"]

    def rows(self, api: Pbx) -> dict[Key, dict]:
        return {
            (r["machine"], r["uniqueid"]): r for r in self.list(api, "admin", customer="system")
        }

    def converge(self, union: dict[Key, dict], timeout: float) -> float:
        """The time.time() at which both APIs were seen listing exactly `union`: the same
        legs, each in the state its machine reports, the same rows on both."""
        deadline = time.monotonic() + timeout
        while True:
            begun = time.time()
            counts = [self.list(a, "admin", customer="system", count="1") for a in self.apis]
            if all(c["count"] == len(union) for c in counts):  # type: ignore[call-overload]
                views = [self.rows(a) for a in self.apis]
                if all(_same(v, union) for v in views) and views[0] == views[1]:
                    return begun
            if time.monotonic() > deadline:
                views = [self.rows(a) for a in self.apis]
                raise RuntimeError(
                    f"the APIs != the union after {timeout} s: "
                    + "; ".join(_differences(v, union) for v in views)
                )
            time.sleep(0.05)

    # -- measures --
    def sent(self) -> int:
        lines = self.stand_ins.tell("report", "report")
        return sum(s + lost for line in lines for s, lost in json.loads(line)["sent"].values())

    def cpu_seconds(self) -> float:
        return sum(_cpu(r.proc.pid) for r in self.recorders if r.proc)

    def engine(self) -> Engine:
        return create_engine(self.direct, poolclass=NullPool)

    def wal_lsn(self) -> int:
        engine = self.engine()
        with engine.connect() as conn:
            lsn = conn.execute(text("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn")).scalar()
        engine.dispose()
        return int(lsn or 0)

    def reopens(self) -> dict[str, int]:
        return {p.name: p.reopens() for p in self.recorders + self.standbys}

    def stop(self) -> None:
        for client in self.clients:
            client.terminate()
            client.wait(10)
        for process in self.processes():  # all at once, then each waited for
            process.terminate()
        for process in self.processes():
            process.stop()
        if hasattr(self, "stand_ins"):
            self.stand_ins.stop()


def _same(view: dict[Key, dict], union: dict[Key, dict]) -> bool:
    return view.keys() == union.keys() and all(
        view[k]["status"] == union[k]["state"] for k in union
    )


def _differences(view: dict[Key, dict], union: dict[Key, dict]) -> str:
    missing, ghosts = union.keys() - view.keys(), view.keys() - union.keys()
    states = [k for k in view.keys() & union.keys() if view[k]["status"] != union[k]["state"]]
    return (
        f"{len(missing)} missing (e.g. {sorted(missing)[:3]}), {len(ghosts)} ghosts "
        f"(e.g. {sorted(ghosts)[:3]}), {len(states)} in another state"
    )


class PgSampler:
    """pg_stat_activity (state, wait event) and ungranted pg_locks of the fleet's database,
    ten times a second until stopped."""

    def __init__(self, url: str) -> None:
        self.engine = create_engine(url, poolclass=NullPool)
        self.waits: Counter[str] = Counter()
        self.locks: Counter[str] = Counter()
        self.samples = 0
        self.oldest: list[float] = []  # per sample: the oldest open transaction's age, s
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        with self.engine.connect() as conn:
            while not self.done.wait(0.1):
                self.samples += 1
                for state, kind, event, n in conn.execute(text(
                    "SELECT state, wait_event_type, wait_event, count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND pid <> pg_backend_pid() "
                    "AND state <> 'idle' GROUP BY 1, 2, 3"
                )):  # fmt: skip
                    self.waits[f"{state}/{kind or '-'}:{event or 'running'}"] += n
                for kind, relation, mode, n in conn.execute(text(
                    "SELECT locktype, relation::regclass::text, mode, count(*) FROM pg_locks "
                    "WHERE NOT granted GROUP BY 1, 2, 3"
                )):  # fmt: skip
                    self.locks[f"{kind} {relation or ''} {mode}"] += n
                self.oldest.append(conn.execute(text(
                    "SELECT coalesce(extract(epoch FROM max(clock_timestamp() - xact_start)), 0)"
                    " FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state <> 'idle'"
                )).scalar() or 0.0)  # fmt: skip
                conn.rollback()

    def stop(self) -> None:
        self.done.set()
        self.thread.join(5)
        self.engine.dispose()

    def top(self) -> str:
        n = max(self.samples, 1)
        waits = ", ".join(f"{k} {v / n:.1f}" for k, v in self.waits.most_common(6))
        locks = ", ".join(f"{k} {v / n:.1f}" for k, v in self.locks.most_common(4))
        ages = sorted(self.oldest) or [0.0]
        oldest = (
            f"; the oldest open transaction: median {ages[len(ages) // 2] * 1000:.0f} ms, "
            f"p99 {ages[int(len(ages) * 0.99)] * 1000:.0f} ms"
        )
        return (
            f"backends per sample ({self.samples} samples): {waits}; waiting locks: {locks}"
            + oldest
        )
