"""Targets 1 and 6 against the sandbox Asterisk: the API vs GET /ari/channels with 1,000 live
legs, and the resident memory of `pbxcontrol serve` with 10,000.

Live legs are Local/<n>@bench calls originated through ARI (both halves answer and wait in
the [bench] context): two legs per call, no SIP traffic. Everything originated is hung up at
the end, also on failure.
"""

from __future__ import annotations

import time

from bench.common import Results, check, median
from bench.sandbox import Ari, Service, preflight


def run_ari(results: Results, quick: bool) -> None:
    calls, rounds = (500, 50) if quick else (500, 200)
    preflight()
    ari, service = Ari(), Service()
    try:
        service.start()
        service.wait_count(0, 30)
        took = ari.originate_local(calls)
        legs = 2 * calls
        service.wait_count(legs, 60)
        print(f"  {legs} live legs ({calls} Local calls originated in {took:.1f} s)", flush=True)
        ari_ms, api_ms, api_bytes, ari_bytes = [], [], 0, 0
        for i in range(rounds + 5):  # interleaved, so both see the same machine state
            started = time.perf_counter()
            resp = ari.http.get("http://127.0.0.1:8088/ari/channels", timeout=30)
            ari_t = (time.perf_counter() - started) * 1000
            started = time.perf_counter()
            api = service.get("calls/active/list", "admin", "admin-pass", customer="system",
                              names="1", sort="snumber")
            api_t = (time.perf_counter() - started) * 1000
            rows = len(api.json()["data"])
            if rows != legs or len(resp.json()) != legs:
                raise RuntimeError(f"API {rows} legs, ARI {len(resp.json())}, want {legs}")
            if i >= 5:
                ari_ms.append(ari_t)
                api_ms.append(api_t)
            api_bytes, ari_bytes = len(api.content), len(resp.content)
        base = median(ari_ms)
        results.add("ari.get_channels_median_ms", base, "ms",
                    note=f"{legs} channels, {ari_bytes // 1024} KB")
        value = median(api_ms)
        results.add("ari.api_system_list_median_ms", value, "ms", baseline=base,
                    baseline_name="Asterisk GET /ari/channels, same legs, interleaved",
                    target="ratio <= 0.5", met=check(value / base, "<=", 0.5),
                    note=f"{legs} legs, names=1, sort=snumber, {api_bytes // 1024} KB, "
                    f"{rounds} rounds over HTTP keep-alive")
        results.add("ari.originate_local_calls_per_s", calls / took, "calls/s")
    finally:
        left = ari.hangup_bench_channels()
        service.stop()
        if left:
            print(f"  WARNING: {left} bench channels still up after hangup", flush=True)


def run_memory(results: Results, quick: bool) -> None:
    calls = 500 if quick else 5000
    legs = 2 * calls
    preflight()
    ari, service = Ari(), Service()
    try:
        service.start()
        service.wait_count(0, 30)
        time.sleep(2)
        idle = service.rss_mb()
        results.add("memory.serve_idle_rss_mb", idle, "MB", note="0 legs, after start-up")
        took = ari.originate_local(calls)
        print(f"  {calls} Local calls originated in {took:.1f} s", flush=True)
        waited = service.wait_count(legs, 300)
        asterisk = len(ari.channels())
        recorded = service.rss_mb()
        base = "the same process idle, 0 legs (memory.serve_idle_rss_mb)"
        results.add("memory.serve_rss_mb_recorded", recorded, "MB", baseline=idle,
                    baseline_name=base,
                    note=f"{legs} legs recorded ({waited:.1f} s after the last originate), "
                    f"Asterisk reports {asterisk} channels")
        for _ in range(3):  # a full list builds every row in Python: the peak a client causes
            service.get("calls/active/list", "admin", "admin-pass", customer="system",
                        names="1")
        peak = service.rss_mb()
        results.add(f"memory.serve_rss_mb.legs_{legs}", peak, "MB", baseline=idle,
                    baseline_name=base, target="<= 150 MB", met=check(peak, "<=", 150),
                    note="after 3 full system lists (names=1)")
        results.add("memory.originate_local_calls_per_s", calls / took, "calls/s",
                    note=f"{calls} calls, 4 concurrent POST /ari/channels")
    finally:
        left = ari.hangup_bench_channels(300)
        service.stop()
        if left:
            print(f"  WARNING: {left} bench channels still up after hangup", flush=True)
