"""Targets 1 and 6 against the sandbox Asterisk: the API vs GET /ari/channels with 1,000 live
legs, and the resident memory of `pbxcontrol serve` with 10,000.

Live legs are Local/<n>@bench calls originated through ARI (both halves answer and wait in
the [bench] context): two legs per call, no SIP traffic. They are originated in batches with
retries; the memory part caps itself at what Asterisk's open-files limit allows (two files
per channel) and reports the legs actually live. Everything originated is hung up at the end,
also on failure, and the part waits until GET /ari/channels is empty.
"""

from __future__ import annotations

import time

from bench.common import Results, check, median
from bench.sandbox import Ari, Service, asterisk_fd_budget, preflight


def run_ari(results: Results, quick: bool) -> None:
    """The system view over HTTP against Asterisk's own list, interleaved: as a poller gets
    it (response cache on, the default) and computed (a second service with the cache off:
    what the first request after any change costs)."""
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
        times: dict[str, list[float]] = {"ari": [], "cached": [], "computed": []}
        sizes: dict[str, int] = {}

        def timed(name: str, i: int, fetch):
            started = time.perf_counter()
            resp = fetch()
            if i >= 5:
                times[name].append((time.perf_counter() - started) * 1000)
            sizes[name] = len(resp.content)
            data = resp.json() if name == "ari" else resp.json()["data"]
            if len(data) != legs:
                raise RuntimeError(f"{name}: {len(data)} legs, want {legs}")

        view = dict(customer="system", names="1", sort="snumber")
        for i in range(rounds + 5):  # interleaved, so all see the same machine state
            timed("ari", i, lambda: ari.http.get("http://127.0.0.1:8088/ari/channels", timeout=30))
            timed(
                "cached", i, lambda: service.get("calls/active/list", "admin", "admin-pass", **view)
            )
            timed(
                "computed",
                i,
                lambda: computing.get("calls/active/list", "admin", "admin-pass", **view),
            )
        base = median(times["ari"])
        baseline = "Asterisk GET /ari/channels, same legs, interleaved"
        results.add(
            "ari.get_channels_median_ms",
            base,
            "ms",
            note=f"{legs} channels, {sizes['ari'] // 1024} KB",
        )
        value = median(times["cached"])
        results.add(
            "ari.api_system_list_median_ms",
            value,
            "ms",
            baseline=base,
            baseline_name=baseline,
            target="ratio <= 0.5",
            met=check(value / base, "<=", 0.5),
            note=f"{legs} legs, names=1, sort=snumber, {sizes['cached'] // 1024} KB, "
            f"{rounds} rounds over HTTP keep-alive, response cache on (the default)",
        )
        value = median(times["computed"])
        results.add(
            "ari.api_system_list_computed_median_ms",
            value,
            "ms",
            baseline=base,
            baseline_name=baseline,
            note="same view, cache_megabytes = 0: every answer computed",
        )
        results.add("ari.originate_local_calls_per_s", calls / took, "calls/s")
    finally:
        left = ari.hangup_bench_channels()
        service.stop()
        computing.stop()
        if left:
            print(f"  WARNING: {left} channels still up after hangup", flush=True)


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
        for _ in range(3):  # a full list builds every row in Python: the peak a client causes
            service.get("calls/active/list", "admin", "admin-pass", customer="system", names="1")
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
            note=f"{legs} live legs, after 3 full system lists (names=1); "
            f"{per_leg_kb:.1f} KB per leg above idle",
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
