"""Target 5 against the sandbox Asterisk: the resident memory of `pbxcontrol serve` with
10,000 live legs (as many as Asterisk's open-files limit allows: two files per channel), after
full system lists. Legs as in bench/live.py; everything originated is hung up at the end.
"""

from __future__ import annotations

import time

from bench.asterisk import asterisk_fd_budget, preflight
from bench.common import Results, check
from bench.live import VIEW, wait_recorded
from bench.sandbox import Ari, Service


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
