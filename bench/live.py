"""Target 1 against the sandbox Asterisk: the API vs GET /ari/channels with 1,000 live legs,
with the data unchanged and changed before every round (bench/memory.py: the memory part).

Live legs are Local/<n>@bench calls originated through ARI (both halves answer and wait in
the [bench] context): two legs per call, no SIP traffic. They are originated in batches with
retries; the memory part caps itself at what Asterisk's open-files limit allows (two files
per channel) and reports the legs actually live. Everything originated is hung up at the end,
also on failure, and the part waits until GET /ari/channels is empty.
"""

from __future__ import annotations

import base64
import http.client
import json
import time
import urllib.parse
from collections.abc import Callable

from bench.asterisk import preflight
from bench.common import Results, check, median
from bench.sandbox import ARI, ARI_AUTH, Ari, Service

VIEW = {"customer": "system", "names": "1", "sort": "snumber"}
ADMIN = {"user": "admin", "password": "admin-pass"}
BASELINE = "Asterisk GET /ari/channels, same legs, interleaved"
LEAN = (
    "through http.client (one keep-alive connection) instead of requests, whose reading of a "
    "body costs about 1 ms per 500 KB here: what the server and the transfer cost"
)
#: Issue 21's target for the list while calls change, on the figure where both sides go through
#: the same lean client (http.client): requests reads a body in 10 KB pieces through urllib3,
#: a cost of the client's Python per byte (about 1 ms of a 2.5-5 ms answer here), not of a server.
TARGET = 0.2


class Lean:
    """GET on one keep-alive http.client connection: a client with far less overhead per
    byte than requests (which reads a body in 10 KB pieces through urllib3)."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None) -> None:
        parts = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=60)
        self.target = f"{parts.path}?{parts.query}" if parts.query else parts.path
        token = base64.b64encode(":".join(auth).encode()).decode() if auth else ""
        self.headers = {"Authorization": f"Basic {token}"} if auth else {}

    def __call__(self) -> bytes:
        self.conn.request("GET", self.target, headers=self.headers)
        resp = self.conn.getresponse()
        body = resp.read()
        if resp.status != 200:
            raise RuntimeError(f"GET {self.target.split('?')[0]}: HTTP {resp.status}")
        return body


class Rounds:
    """Interleaved timings of GET /ari/channels and the services' system list, each answer
    checked against the legs that should be live. With `lean`, the rounds asked with
    `one(..., lean=True)` go through http.client instead (names "ari.lean", "<name>.lean"),
    so every request is still the first one to its service after a change."""

    def __init__(
        self, ari: Ari, services: dict[str, Service], legs: int, lean: bool = False
    ) -> None:
        self.ari, self.services, self.legs = ari, services, legs
        self.fetch: dict[str, Callable[[], bytes]] = {
            "ari": lambda: ari.http.get(f"{ARI}/channels", timeout=30).content
        }
        for name, service in services.items():
            url = service.url("calls/active/list", **ADMIN, **VIEW)
            self.fetch[name] = lambda url=url, s=service: s.http.get(url, timeout=60).content
            if lean:
                self.fetch[f"{name}.lean"] = Lean(url)
        if lean:
            self.fetch["ari.lean"] = Lean(f"{ARI}/channels", ARI_AUTH)
        self.times: dict[str, list[float]] = {name: [] for name in self.fetch}
        self.sizes: dict[str, int] = {}
        self._logged = {name: len(s.served_ms()) for name, s in services.items()}
        self.rounds = self.kept = 0

    def one(
        self, keep: bool, new: int | None = None, old: int | None = None, lean: bool = False
    ) -> None:
        """One request each, in turn; with `new`/`old` (source numbers), every answer must
        hold the new call's legs and none of the old one's: so the services' answers were
        computed after the change (a miss of the response cache)."""
        self.rounds += 1
        self.kept += keep
        for name in ("ari", *self.services):
            self._timed(f"{name}.lean" if lean else name, keep, new, old)

    def _timed(self, name: str, keep: bool, new: int | None, old: int | None) -> None:
        started = time.perf_counter()
        body = self.fetch[name]()
        if keep:
            self.times[name].append((time.perf_counter() - started) * 1000)
        self.sizes[name] = len(body)
        asterisk = name.startswith("ari")
        data = json.loads(body) if asterisk else json.loads(body)["data"]
        if len(data) != self.legs:
            raise RuntimeError(f"{name}: {len(data)} legs, want {self.legs}")
        if new is None:
            return
        numbers = [c["caller"]["number"] if asterisk else c["snumber"] for c in data]
        if numbers.count(str(old)) or not numbers.count(str(new)):
            raise RuntimeError(f"{name}: the answer predates the change (new {new}, old {old})")

    def median(self, name: str) -> float:
        return median(self.times[name])

    def served(self, name: str) -> str:
        """The median server-side time of the kept rounds, from the service's access log."""
        start = self._logged[name] + self.rounds - self.kept  # the warm-up rounds come first
        kept = self.services[name].served_ms()[start : self._logged[name] + self.rounds]
        return f"server side (access log) median {median(kept):.1f} ms" if kept else ""


def wait_recorded(services: list[Service], legs: int, new: int, old: int, timeout=30.0) -> float:
    """(Untimed.) Seconds until every service's database holds the new call's two legs, none
    of the old call's, `legs` in all. Read from the database file: no API request, so
    nothing warms the services' caches before the timed requests."""
    started, want = time.monotonic(), (2, 0, legs)
    for s in services:
        while (s.recorded(str(new)), s.recorded(str(old)), s.recorded()) != want:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"the recorder did not write call {new} in {timeout} s")
            time.sleep(0.005)
    return time.monotonic() - started


def run_ari(results: Results, quick: bool) -> None:
    """The system view over HTTP against Asterisk's own list, interleaved: as a poller gets
    it unchanged (response cache on, the default), computed (a second service with the
    cache off) and, with a new call before every round, as a poller gets it while calls come
    and go (both services: no cached answer can serve)."""
    calls, rounds = (500, 50) if quick else (500, 200)  # changing: half of them each client
    preflight()
    ari, service = Ari(), Service()
    computing = Service(
        app="pbxcontrol-bench-nocache", extra="[plugin:active_calls]\ncache_megabytes = 0\n"
    )
    try:
        service.start()
        computing.start()
        service.wait_count(0, 30)
        calls, took, failed = ari.originate_local(calls)
        legs = 2 * calls
        if failed:
            raise RuntimeError(f"{failed} originates failed; {calls} calls up")
        service.wait_count(legs, 60)
        computing.wait_count(legs, 60)
        print(f"  {legs} live legs ({calls} Local calls originated in {took:.1f} s)", flush=True)
        steady = Rounds(ari, {"cached": service, "computed": computing}, legs)
        for i in range(rounds + 5):  # interleaved, so all see the same machine state
            steady.one(keep=i >= 5)
        changing = Rounds(ari, {"cached": service, "computed": computing}, legs, lean=True)
        waited = []
        for i in range(rounds + 5):
            new, old = ari.replace_oldest_call()
            waited.append(wait_recorded([service, computing], legs, new, old))
            changing.one(i >= 5, new, old, lean=i % 2 == 1)  # every other round
        _report_ari(results, steady, changing, rounds, median(waited))
        results.add("ari.originate_local_calls_per_s", calls / took, "calls/s")
    finally:
        left = ari.hangup_bench_channels()
        service.stop()
        computing.stop()
        if left:
            print(f"  WARNING: {left} channels still up after hangup", flush=True)


def _report_ari(
    results: Results, steady: Rounds, changing: Rounds, rounds: int, waited: float
) -> None:
    legs, base = steady.legs, steady.median("ari")
    results.add(
        "ari.get_channels_median_ms",
        base,
        "ms",
        note=f"{legs} channels, {steady.sizes['ari'] // 1024} KB",
    )
    value = steady.median("cached")
    results.add(
        "ari.api_system_list_median_ms",
        value,
        "ms",
        baseline=base,
        baseline_name=BASELINE,
        target="ratio <= 0.5",
        met=check(value / base, "<=", 0.5),
        note=f"{legs} legs, names=1, sort=snumber, {steady.sizes['cached'] // 1024} KB, "
        f"{rounds} rounds over HTTP keep-alive, response cache on (the default), data "
        f"unchanged; {steady.served('cached')}",
    )
    value = steady.median("computed")
    results.add(
        "ari.api_system_list_computed_median_ms",
        value,
        "ms",
        baseline=base,
        baseline_name=BASELINE,
        note=f"same view, cache_megabytes = 0: every answer computed; {steady.served('computed')}",
    )
    base = changing.median("ari")
    results.add(
        "ari.get_channels_changing_median_ms",
        base,
        "ms",
        note=f"{legs} channels, the rounds of ari.api_system_list_changing_median_ms",
    )
    value = changing.median("cached")
    results.add(
        "ari.api_system_list_changing_median_ms",
        value,
        "ms",
        baseline=base,
        baseline_name=BASELINE + " (changing rounds)",
        note=f"same view, response cache on; before each of {rounds} rounds one Local call "
        f"originated and the oldest hung up ({legs} legs kept), then (untimed, median "
        f"{waited * 1000:.0f} ms) waited until both services' databases hold it; every answer "
        "checked to hold the new call and not the old: computed after the change; every "
        "other round through http.client (the ..._lean_ figures), so each request is the "
        f"first to its service after the change; {changing.served('cached')} (both clients); "
        "the target is on the http.client half (ari.api_system_list_changing_lean_median_ms)",
    )
    value = changing.median("computed")
    results.add(
        "ari.api_system_list_changing_computed_median_ms",
        value,
        "ms",
        baseline=base,
        baseline_name=BASELINE + " (changing rounds)",
        note=f"the same changing rounds, cache_megabytes = 0; {changing.served('computed')}",
    )
    value = changing.median("computed.lean")
    results.add(
        "ari.api_system_list_changing_computed_lean_median_ms",
        value,
        "ms",
        baseline=changing.median("ari.lean"),
        baseline_name=BASELINE + " (changing rounds, http.client)",
        note="the same rounds as ari.api_system_list_changing_lean_median_ms, cache off",
    )
    base = changing.median("ari.lean")
    results.add("ari.get_channels_changing_lean_median_ms", base, "ms", note="Asterisk, " + LEAN)
    value = changing.median("cached.lean")
    results.add(
        "ari.api_system_list_changing_lean_median_ms",
        value,
        "ms",
        baseline=base,
        baseline_name=BASELINE + " (changing rounds, http.client)",
        target=f"ratio <= {TARGET}",
        met=check(value / base, "<=", TARGET),
        note="the other half of ari.api_system_list_changing_median_ms's rounds (cache on, "
        "each answer computed after a change), " + LEAN,
    )
