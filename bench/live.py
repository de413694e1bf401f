"""Targets 1 and 6 against the sandbox Asterisk: the API vs GET /ari/channels with 1,000 live
legs, and the resident memory of `pbxcontrol serve` with 10,000.

Live legs are Local/<n>@bench calls originated through ARI (both halves answer and wait in
the [bench] context): two legs per call, no SIP traffic. They are originated in batches with
retries; the memory part caps itself at what Asterisk's open-files limit allows (two files
per channel) and reports the legs actually live. Everything originated is hung up at the end,
also on failure, and the part waits until GET /ari/channels is empty.
"""

from __future__ import annotations

import functools
import time

from bench.asterisk import asterisk_fd_budget, preflight
from bench.common import Results, check, median
from bench.sandbox import ARI, Ari, Service

VIEW = {"customer": "system", "names": "1", "sort": "snumber"}
BASELINE = "Asterisk GET /ari/channels, same legs, interleaved"


class Rounds:
    """Interleaved timings of GET /ari/channels and the services' system list, each answer
    checked against the legs that should be live."""

    def __init__(self, ari: Ari, services: dict[str, Service], legs: int) -> None:
        self.ari, self.services, self.legs = ari, services, legs
        self.times: dict[str, list[float]] = {"ari": [], **{name: [] for name in services}}
        self.sizes: dict[str, int] = {}
        self._logged = {name: len(s.served_ms()) for name, s in services.items()}
        self.rounds = self.kept = 0

    def one(self, keep: bool, new: int | None = None, old: int | None = None) -> None:
        """One request each, in turn; with `new`/`old` (source numbers), every answer must
        hold the new call's legs and none of the old one's: so the services' answers were
        computed after the change (a miss of the response cache)."""
        self.rounds += 1
        self.kept += keep
        self._timed("ari", keep, lambda: self.ari.http.get(f"{ARI}/channels", timeout=30))
        for name, service in self.services.items():
            fetch = functools.partial(service.get, "calls/active/list", "admin", "admin-pass")
            self._timed(name, keep, lambda fetch=fetch: fetch(**VIEW), new, old)

    def _timed(self, name, keep, fetch, new=None, old=None) -> None:
        started = time.perf_counter()
        resp = fetch()
        if keep:
            self.times[name].append((time.perf_counter() - started) * 1000)
        self.sizes[name] = len(resp.content)
        data = resp.json() if name == "ari" else resp.json()["data"]
        if len(data) != self.legs:
            raise RuntimeError(f"{name}: {len(data)} legs, want {self.legs}")
        if new is None:
            return
        key = (lambda c: c["caller"]["number"]) if name == "ari" else (lambda c: c["snumber"])
        numbers = [key(c) for c in data]
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
    calls, rounds = (500, 50) if quick else (500, 200)
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
        changing = Rounds(ari, {"cached": service, "computed": computing}, legs)
        waited = []
        for i in range(rounds + 5):
            new, old = ari.replace_oldest_call()
            waited.append(wait_recorded([service, computing], legs, new, old))
            changing.one(i >= 5, new, old)
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
        target="ratio <= 0.25",
        met=check(value / base, "<=", 0.25),
        note=f"same view, response cache on; before each of {rounds} rounds one Local call "
        f"originated and the oldest hung up ({legs} legs kept), then (untimed, median "
        f"{waited * 1000:.0f} ms) waited until both services' databases hold it; every answer "
        f"checked to hold the new call and not the old: computed after the change; "
        f"{changing.served('cached')}",
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


def full_lists(ari: Ari, service: Service, legs: int, lists: int = 3) -> None:
    """Full system lists, each after one call was replaced (so each is computed, as while
    calls come and go, not answered from the cache), each checked for every leg."""
    for _ in range(lists):
        new, old = ari.replace_oldest_call()
        wait_recorded([service], legs, new, old, timeout=120)
        data = service.get("calls/active/list", "admin", "admin-pass", **VIEW).json()["data"]
        if len(data) != legs or not any(leg["snumber"] == str(new) for leg in data):
            raise RuntimeError(f"full list: {len(data)} legs, want {legs} with call {new}")


def run_memory(results: Results, quick: bool) -> None:
    wanted = 500 if quick else 5000
    preflight()
    budget, limit = asterisk_fd_budget()
    calls = min(wanted, budget // 4)  # 2 channels per call, 2 descriptors per channel
    if calls < wanted:
        print(
            f"  Asterisk may open {limit} files: {calls} calls ({2 * calls} legs) instead of "
            f"{wanted}",
            flush=True,
        )
    ari, service = Ari(), Service()
    try:
        service.start()
        service.wait_count(0, 30)
        time.sleep(2)
        idle = service.rss_mb()
        results.add("memory.serve_idle_rss_mb", idle, "MB", note="0 legs, after start-up")
        calls, took, failed = ari.originate_local(calls)
        legs = 2 * calls
        print(
            f"  {calls} Local calls ({legs} legs) originated in {took:.1f} s, "
            f"{failed} failed after retries",
            flush=True,
        )
        waited = service.wait_count(legs, 300)
        asterisk = len(ari.channels())
        recorded = service.rss_mb()
        base = "the same process idle, 0 legs (memory.serve_idle_rss_mb)"
        fd_note = (
            f"; Asterisk's open-files limit is {limit} (hard; 2 per channel), so "
            f"{legs} legs, not {2 * wanted}"
            if calls < wanted
            else ""
        )
        results.add(
            "memory.live_legs",
            legs,
            "legs",
            note=f"Asterisk reports {asterisk} channels; {failed} originates failed" + fd_note,
        )
        results.add(
            "memory.serve_rss_mb_recorded",
            recorded,
            "MB",
            baseline=idle,
            baseline_name=base,
            note=f"{legs} legs recorded ({waited:.1f} s after the last originate)",
        )
        full_lists(ari, service, legs)
        peak = service.rss_mb()
        per_leg_kb = (peak - idle) * 1024 / legs if legs else 0.0
        at_target = idle + per_leg_kb * 2 * wanted / 1024
        results.add(
            "memory.serve_rss_mb",
            peak,
            "MB",
            baseline=idle,
            baseline_name=base,
            target="<= 150 MB",
            met=check(peak, "<=", 150),
            note=f"{legs} live legs, after 3 full system lists (names=1, sort=snumber, each "
            f"computed: a call replaced before each); {per_leg_kb:.1f} KB per leg above idle; "
            f"peak while serving (VmHWM) {service.rss_mb('VmHWM'):.0f} MB",
        )
        if legs < 2 * wanted:
            results.add(
                f"memory.serve_rss_mb.legs_{2 * wanted}_extrapolated",
                at_target,
                "MB",
                baseline=idle,
                baseline_name=base,
                target="<= 150 MB",
                met=check(at_target, "<=", 150),
                note=f"linear from {legs} legs",
            )
        results.add(
            "memory.originate_local_calls_per_s",
            calls / took,
            "calls/s",
            note=f"{calls} calls, 4 concurrent POST /ari/channels, batches of 250",
        )
    finally:
        left = ari.hangup_bench_channels(300)
        service.stop()
        if left:
            print(f"  WARNING: {left} channels still up after hangup", flush=True)
