"""The lag part's clients in processes of their own (bench/load.py): the bare websocket client
(bench/wsclock.py, the baseline) and a live-stream subscriber (bench/fleetclient.py) on the
system view. Each in its own process, so neither waits for the bench process's GIL (its
poller parses JSON back to back) and the two are timed alike: the receipt time of what the
socket brought.

Figures: event → stream upsert and → stream remove, from the event's own timestamp as
Asterisk stamps it, against the same events reaching the bare websocket client. Target
(issue 21): upsert p99 <= 1.5 x the bare delivery's p99 + 10 ms.
"""

from __future__ import annotations

import json
import selectors
import subprocess
import sys

from bench.common import ROOT, Results, check, end, median, percentile
from bench.sandbox import ARI_AUTH, Service

# Subscribed as the recorder is (pbxcontrol.ari.client: never subscribeAll, which can wedge
# Asterisk's ARI when a websocket closes).
EVENTS_URL = "ws://127.0.0.1:8088/ari/events?app=bench-lag"
SUBSCRIPTION = "http://127.0.0.1:8088/ari/applications/bench-lag/subscription"
SYSTEM = "auth_username=admin;auth_password=admin-pass;customer=system"
BASE = "the same events reaching a bare websocket client (own process; delivery from Asterisk)"


class Child:
    """A standalone bench script in a process of its own, spoken to over stdin/stdout."""

    def __init__(self, script: str, order: dict, timeout: float = 30.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "bench" / script)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self._say(json.dumps(order))
        if self._line(timeout) != "ready":
            self.close()
            raise RuntimeError(f"bench/{script} did not get ready in {timeout} s")

    def _say(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def _line(self, timeout: float) -> str:
        assert self.proc.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            if not selector.select(timeout):
                return ""
        return self.proc.stdout.readline().strip()

    def report(self, command: str = "stop", timeout: float = 30.0) -> dict:
        self._say(command)
        line = self._line(timeout)
        if not line:
            raise RuntimeError("a bench client gave no report")
        return json.loads(line)

    def close(self) -> None:
        end(self.proc)


class WsClock(Child):
    """Asterisk timestamps of ChannelCreated/Destroyed, and when a bare client got them
    (`created`, `destroyed`, `delivery_ms`: filled by `collect`)."""

    def __init__(self) -> None:
        order = {"url": EVENTS_URL, "subscription": SUBSCRIPTION, "auth": list(ARI_AUTH)}
        super().__init__("wsclock.py", order)
        self.created: dict[str, float] = {}
        self.destroyed: dict[str, float] = {}
        self.delivery_ms: list[float] = []

    def collect(self) -> None:
        got = self.report()
        self.created, self.destroyed = got["created"], got["destroyed"]
        self.delivery_ms = got["delivery_ms"]


class StreamWatch(Child):
    """One SSE subscriber to the system view: the first upsert and remove of each leg."""

    def __init__(self, service: Service) -> None:
        super().__init__(
            "fleetclient.py", {"subscriptions": [["127.0.0.1", service.port, SYSTEM, True]]}
        )
        self.upsert: dict[str, float] = {}
        self.remove: dict[str, float] = {}
        self.closed = 0

    def collect(self) -> None:
        got = self.report()
        self.upsert, self.remove, self.closed = got["first"], got["gone"], got["closed"]


def stream_figures(
    results: Results, clock: WsClock, watch: StreamWatch, start: float, end: float
) -> None:
    window = {uid: ts for uid, ts in clock.created.items() if start <= ts < end}
    upsert = [(watch.upsert[uid] - ts) * 1000 for uid, ts in window.items() if uid in watch.upsert]
    remove = [
        (watch.remove[uid] - clock.destroyed[uid]) * 1000
        for uid in window
        if uid in watch.remove and uid in clock.destroyed
    ]
    missing = sorted(uid for uid in window if uid not in watch.upsert)
    base50, base99 = median(clock.delivery_ms), percentile(clock.delivery_ms, 99)
    bound = 1.5 * base99 + 10
    if upsert:
        p99 = percentile(upsert, 99)
        results.add(
            "lag.stream_upsert_p50_ms",
            median(upsert),
            "ms",
            baseline=base50,
            baseline_name=BASE,
            note=f"{len(upsert)} legs: ChannelCreated's timestamp -> the first upsert of the "
            "leg at one SSE subscriber of the system view (its own process)",
        )
        results.add(
            "lag.stream_upsert_p99_ms",
            p99,
            "ms",
            baseline=base99,
            baseline_name=BASE,
            target="<= 1.5x p99 + 10 ms",
            met=check(p99, "<=", bound),
            note=f"bound {bound:.1f} ms (1.5 x {base99:.1f} + 10)",
        )
    if remove:
        results.add(
            "lag.stream_remove_p50_ms",
            median(remove),
            "ms",
            baseline=base50,
            baseline_name=BASE,
            note="ChannelDestroyed's timestamp -> the leg's remove at the subscriber",
        )
        results.add(
            "lag.stream_remove_p99_ms",
            percentile(remove, 99),
            "ms",
            baseline=base99,
            baseline_name=BASE,
        )
    results.add(
        "lag.stream_legs_missing",
        len(missing),
        "legs",
        target="= 0",
        met=not missing and not watch.closed,
        note=f"created in the window, never upserted on the stream; streams closed "
        f"{watch.closed}" + (f"; e.g. {missing[:3]}" if missing else ""),
    )
