"""Targets 4 and 5 under real SIP load: sipp places 50 calls/s trunk -> DID 0201112222 -> alice
(short calls) through the sandbox Asterisk while `pbxcontrol serve` records them.

Lag (first `lag_s` seconds): a bare websocket client of our own (app bench-lag, in its own
process: bench/lagstream.py) notes each channel's ChannelCreated/ChannelDestroyed Asterisk
`timestamp`; one poller asks the API's system view back to back and notes when a leg first
appears / disappears in a *response* (the time the answer arrived, so the figure includes one
API round trip; its resolution is one poll); one live-stream subscriber of the system view (its
own process too) notes each leg's first upsert and remove. Baseline: when the same events
reached our own websocket client.

Then, with the calls still coming: wrk on the 404 envelope (baseline, no database) and wrk for
30 s at 32 connections on Acme's own view (the customer the DID belongs to).
"""

from __future__ import annotations

import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from pathlib import Path

from bench.common import ROOT, Results, check, median, percentile
from bench.lagstream import BASE, StreamWatch, WsClock, stream_figures
from bench.sandbox import Ari, Service, preflight
from bench.wrk import run_wrk

SIPP = ROOT / "sandbox" / "sipp"
RATE = 50


class Poller:
    """Asks the system view back to back; first time each leg is in / out of an answer."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.seen: dict[str, float] = {}
        self.gone: dict[str, float] = {}
        self.poll_ms: list[float] = []
        self.errors = 0
        self.stopping = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        present: set[str] = set()
        while not self.stopping:
            started = time.time()
            try:
                body = self.service.get(
                    "calls/active/list", "admin", "admin-pass", customer="system"
                ).json()
            except (OSError, ValueError):
                self.errors += 1
                continue
            now = time.time()
            self.poll_ms.append((now - started) * 1000)
            ids = {row["uniqueid"] for row in body["data"]}
            for uid in ids - present:
                self.seen.setdefault(uid, now)
            for uid in present - ids:
                self.gone.setdefault(uid, now)
            present = ids

    def stop(self) -> None:
        self.stopping = True
        self.thread.join(5)


def _sipp(args: list[str], logdir: Path, label: str) -> subprocess.Popen:
    log = open(logdir / f"{label}.log", "wb")  # noqa: SIM115 - lives as long as sipp
    return subprocess.Popen(
        [
            "sipp",
            *args,
            "-nostdin",
            "-trace_err",
            "-error_file",
            str(logdir / f"{label}.errors"),
            "-trace_screen",
            "-screen_file",
            str(logdir / f"{label}.screen"),
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
        cwd=logdir,
    )


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _screen_count(path: Path, what: str) -> int | None:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return None
    found = re.findall(rf"{what}\s*\|\s*\d+\s*\|\s*(\d+)", text)
    return int(found[-1]) if found else None


def run_lag(results: Results, quick: bool) -> None:
    lag_s, base_s, wrk_s = (15, 5, 10) if quick else (60, 10, 30)
    total_s = lag_s + 3 + 2 * (base_s + wrk_s) + 25  # wrk twice: processes = 1, then 2
    if not shutil.which("sipp"):
        raise RuntimeError("sipp missing: apt-get install sip-tester")
    preflight()
    logdir = Path(tempfile.mkdtemp(prefix="pbx-bench-sipp-"))
    service, clock, poller, uas, uac = Service(), None, None, None, None
    watch: StreamWatch | None = None
    service2: Service | None = None
    try:
        service.start()
        service.wait_count(0, 30)
        clock = WsClock()
        watch = StreamWatch(service)
        uas = _sipp(
            [
                "-sf",
                str(SIPP / "uas_answer.xml"),
                "-i",
                "127.0.0.5",
                "-p",
                "5080",
                "-mp",
                "6100",
                "-d",
                "100",
            ],
            logdir,
            "alice-uas",
        )
        time.sleep(1)
        poller = Poller(service)
        t0 = time.time()
        uac = _sipp(
            [
                "-sf",
                str(SIPP / "uac.xml"),
                "-i",
                "127.0.0.3",
                "-p",
                "5070",
                "-mp",
                "6000",
                "-s",
                "0201112222",
                "-key",
                "cnum",
                "0207946000",
                "-key",
                "cname",
                "Dentist",
                "-d",
                "300",
                "-r",
                str(RATE),
                "-m",
                str(RATE * total_s),
                "-timeout",
                f"{total_s + 60}s",
                "127.0.0.1:5060",
            ],
            logdir,
            "trunk-uac",
        )
        time.sleep(lag_s + 3)
        poller.stop()
        clock.collect()
        watch.collect()
        _lag_figures(results, clock, poller, t0, t0 + lag_s)
        _recorder_figures(results, clock, poller, service, (t0, t0 + lag_s))
        stream_figures(results, clock, watch, t0, t0 + lag_s)
        # A second `serve` with `[http] processes = 2`, recording the same calls; both wrk runs
        # happen while both recorders ingest, so they see the same machine load.
        service2 = Service(app="pbxcontrol-bench-p2", processes=2)
        service2.start()
        time.sleep(5)  # its first GET /channels sync
        _wrk_pair(results, service, base_s, wrk_s, "http.", "default config, 1 API process")
        _wrk_pair(results, service2, base_s, wrk_s, "http.processes_2.", "[http] processes = 2")
        service2.stop()
        service2 = None
        uac.wait(total_s + 90)
        time.sleep(3)
        _end_state(results, service, logdir)
    finally:
        for proc in (uac, uas):
            _stop(proc)
        if poller is not None:
            poller.stop()
        for child in (clock, watch):
            if child is not None:
                child.close()
        if service2 is not None:
            service2.stop()
        service.stop()
        print(f"  sipp logs: {logdir}", flush=True)


def _wrk_pair(
    results: Results, service: Service, base_s: int, wrk_s: int, prefix: str, label: str
) -> None:
    url = service.base
    service.get("calls/active/list", "acme", "acme-pass")  # password check cached
    base = run_wrk(url + "bench/nothing/", base_s, "404")
    sizes: list[int] = []
    sampler = threading.Thread(target=_sample_view, args=(service, sizes, wrk_s), daemon=True)
    sampler.start()
    view = run_wrk(
        url + "calls/active/list/?auth_username=acme;auth_password=acme-pass;names=1", wrk_s, "200"
    )
    sampler.join()
    _wrk_figures(results, base, view, sizes, base_s, wrk_s, prefix, label)
    print(
        f"  wrk {label}: {view['rps']:.0f} req/s, p99 {view['p99_ms']:.1f} ms, "
        f"errors {view['errors']} (404 envelope {base['rps']:.0f} req/s)",
        flush=True,
    )


def _sample_view(service: Service, sizes: list[int], seconds: float) -> None:
    end = time.time() + seconds
    while time.time() < end:
        try:
            body = service.get("calls/active/list", "acme", "acme-pass", count="1").json()
            sizes.append(int(body["data"]["count"]))
        except (OSError, ValueError, KeyError, TypeError):
            pass
        time.sleep(1)


def _lag_figures(
    results: Results, clock: WsClock, poller: Poller, start: float, end: float
) -> None:
    window = {uid: ts for uid, ts in clock.created.items() if start <= ts < end}
    appear = [(poller.seen[uid] - ts) * 1000 for uid, ts in window.items() if uid in poller.seen]
    missing = sorted(uid for uid in window if uid not in poller.seen)
    vanish = [
        (poller.gone[uid] - clock.destroyed[uid]) * 1000
        for uid in window
        if uid in poller.gone and uid in clock.destroyed
    ]
    delivery = clock.delivery_ms
    base50, base99 = median(delivery), percentile(delivery, 99)
    base = BASE
    results.add("lag.ws_delivery_p50_ms", base50, "ms", note=f"{len(delivery)} events")
    results.add("lag.ws_delivery_p99_ms", base99, "ms")
    note = (
        f"{len(window)} channels in {end - start:.0f} s at {RATE} calls/s; "
        f"poll p50 {median(poller.poll_ms):.1f} ms"
    )
    p50, p99 = median(appear), percentile(appear, 99)
    results.add("lag.appear_p50_ms", p50, "ms", baseline=base50, baseline_name=base, note=note)
    results.add(
        "lag.appear_p99_ms",
        p99,
        "ms",
        baseline=base99,
        baseline_name=base,
        target="<= 100 ms",
        met=check(p99, "<=", 100),
    )
    if vanish:
        results.add(
            "lag.vanish_p50_ms",
            median(vanish),
            "ms",
            baseline=base50,
            baseline_name=base,
            note="ChannelDestroyed -> leg gone from the API",
        )
        results.add(
            "lag.vanish_p99_ms", percentile(vanish, 99), "ms", baseline=base99, baseline_name=base
        )
    results.add(
        "lag.legs_missing",
        len(missing),
        "legs",
        target="= 0",
        met=not missing and poller.errors == 0,
        note=f"created in the window, never seen by the API; poll errors "
        f"{poller.errors}" + (f"; e.g. {missing[:3]}" if missing else ""),
    )


def _recorder_figures(
    results: Results,
    clock: WsClock,
    poller: Poller,
    service: Service,
    span: tuple[float, float],
) -> None:
    """Where the lag goes: event -> the recorder's write of the leg (the `at` of its first
    journal entry, taken in the writer's transaction just before the commit), and that write
    -> the first answer of the poller that shows it (the API's side: the next poll after the
    commit and its round trip)."""
    db = sqlite3.connect(f"file:{service.dir / 'pbx.db'}?mode=ro", uri=True)
    try:
        first = dict(
            db.execute(
                "SELECT uniqueid, min(at) FROM leg_changes WHERE op = 'upsert' GROUP BY uniqueid"
            )
        )
        removed = dict(
            db.execute(
                "SELECT uniqueid, min(at) FROM leg_changes WHERE op = 'remove' GROUP BY uniqueid"
            )
        )
    finally:
        db.close()
    window = {uid: ts for uid, ts in clock.created.items() if span[0] <= ts < span[1]}
    shown = [
        (poller.seen[uid] - first[uid]) * 1000
        for uid in window
        if uid in poller.seen and uid in first
    ]
    written = [(first[uid] - ts) * 1000 for uid, ts in window.items() if uid in first]
    gone = [
        (removed[uid] - clock.destroyed[uid]) * 1000
        for uid in window
        if uid in removed and uid in clock.destroyed
    ]
    if not written:
        return
    base = BASE
    base50, base99 = median(clock.delivery_ms), percentile(clock.delivery_ms, 99)
    note = f"{len(written)} legs; the event's timestamp -> the journal entry of its write"
    if shown:
        results.add(
            "lag.api_after_write_p50_ms",
            median(shown),
            "ms",
            note="the leg's write -> the first poll answer showing it",
        )
        results.add("lag.api_after_write_p99_ms", percentile(shown, 99), "ms")
    for name, values in (("recorded", written), ("recorded_gone", gone)):
        if values:
            results.add(
                f"lag.{name}_p50_ms",
                median(values),
                "ms",
                baseline=base50,
                baseline_name=base,
                note=note if name == "recorded" else "ChannelDestroyed -> the leg's delete written",
            )
            results.add(
                f"lag.{name}_p99_ms",
                percentile(values, 99),
                "ms",
                baseline=base99,
                baseline_name=base,
            )


def _wrk_figures(
    results: Results,
    base: dict,
    view: dict,
    sizes: list[int],
    base_s: int,
    wrk_s: int,
    prefix: str = "http.",
    label: str = "",
) -> None:
    name = f"wrk on the 404 envelope (no database), {base_s} s, 32 connections, same load, {label}"
    legs = (
        f"Acme's view held {min(sizes, default=0)}-{max(sizes, default=0)} legs"
        f" (median {median(sizes) if sizes else 0:.0f})"
    )
    results.add(
        prefix + "404_requests_per_s", base["rps"], "req/s", note=f"errors {base['errors']}"
    )
    results.add(prefix + "404_p99_ms", base["p99_ms"], "ms")
    results.add(
        prefix + "customer_view_requests_per_s",
        view["rps"],
        "req/s",
        baseline=base["rps"],
        baseline_name=name,
        note=f"{wrk_s} s, 32 connections, names=1, during sipp load, {label}; {legs}",
    )
    results.add(
        prefix + "customer_view_p50_ms",
        view["p50_ms"],
        "ms",
        baseline=base["p50_ms"],
        baseline_name=name,
    )
    results.add(
        prefix + "customer_view_p99_ms",
        view["p99_ms"],
        "ms",
        baseline=base["p99_ms"],
        baseline_name=name,
        target="<= 50 ms",
        met=check(view["p99_ms"], "<=", 50),
    )
    results.add(
        prefix + "customer_view_errors",
        view["errors"],
        "errors",
        target="= 0",
        met=view["errors"] == 0,
        note=view["error_detail"],
    )


def _end_state(results: Results, service: Service, logdir: Path) -> None:
    channels = [
        c for c in Ari().channels() if c["name"].startswith(("PJSIP/trunk1", "PJSIP/alice"))
    ]
    legs = service.get("calls/active/list", "admin", "admin-pass", customer="system").json()
    left = len(legs["data"])
    ok = _screen_count(logdir / "trunk-uac.screen", "Successful call")
    failed = _screen_count(logdir / "trunk-uac.screen", "Failed call")
    results.add(
        "lag.legs_left_over",
        left,
        "legs",
        target="= 0",
        met=left == 0 and not channels,
        note=f"API legs after the run; Asterisk still has {len(channels)} sipp "
        f"channels; sipp calls ok {ok}, failed {failed}",
    )
