"""Soak with faults against the sandbox Asterisk (not part of `make test`; run by hand):

    .venv/bin/python -m tests.soak.soak --minutes 30 --rate 20

sipp places `rate` calls/s (carrier -> DID 0201112222 -> alice, each talking `talk` s) for the
whole run while: the ARI websocket is cut every `--cut-every` s (a TCP proxy between pbxcontrol
and Asterisk), Asterisk is restarted once (at 45% of the run), pbxcontrol is killed with -9
once and restarted (at 70%), and the API is queried continuously. Every `--check-every` s it
compares the API's system view with GET /ari/channels; after each fault it measures the time
until they agree again. Memory (VmRSS, split into heap and file pages) is sampled all along;
at the end every call is over, the list must be empty and `PRAGMA integrity_check` must say
ok. Writes tests/soak/results.json.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import tempfile
import threading
import time
from pathlib import Path

from sandbox.sippctl import (
    ASTERISK_SIP,
    SIPP_DIR,
    TRUNK_IP,
    UAC_PORT,
    Ari,
    SippPool,
    sandbox,
    sandbox_running,
)
from tests.e2e.proxy import CuttableProxy
from tests.e2e.support import PbxServer

RESULTS = Path(__file__).with_name("results.json")


def compare(pbx: PbxServer, ari: Ari) -> tuple[int, int] | None:
    """(missing, left over): channels Asterisk had before and after our read that the API
    lacks, and API legs Asterisk had at neither moment. None if the API did not answer."""
    before = {c["id"] for c in ari.channels()}
    rows = pbx.list("admin", customer="system")
    after = {c["id"] for c in ari.channels()}
    if rows is None:
        return None
    api = {r["uniqueid"] for r in rows}
    return len((before & after) - api), len(api - (before | after))


def memory_mb(pbx: PbxServer) -> list[float | None]:
    """[VmRSS, RssAnon, RssFile] of the pbxcontrol process in MB. RssAnon is the heap;
    RssFile includes the database pages SQLite reads through mmap (they grow with the file and
    belong to the kernel's page cache)."""
    if pbx.proc is None:
        return [None, None, None]
    fields = {}
    try:
        for line in Path(f"/proc/{pbx.proc.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmRSS", "RssAnon", "RssFile"):
                fields[name] = round(int(value.split()[0]) / 1024, 1)
    except OSError:
        return [None, None, None]
    return [fields.get("VmRSS"), fields.get("RssAnon"), fields.get("RssFile")]


class Querier(threading.Thread):
    """Queries a customer view continuously, as a wallboard would."""

    def __init__(self, pbx: PbxServer):
        super().__init__(daemon=True)
        self.pbx, self.stop_flag = pbx, threading.Event()
        self.ok = self.unanswered = self.errors = 0
        self.latencies: list[float] = []

    def run(self) -> None:
        while not self.stop_flag.is_set():
            started = time.perf_counter()
            try:
                body = self.pbx.call_api("acme", names="1")
            except Exception:  # connection refused while pbxcontrol is down
                self.unanswered += 1
                time.sleep(0.2)
                continue
            if body["responses"][0]["code"] == "200":
                self.ok += 1
                self.latencies.append((time.perf_counter() - started) * 1000)
            else:
                self.errors += 1
            time.sleep(0.05)


def converge(pbx: PbxServer, ari: Ari, timeout: float = 60.0) -> float | None:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        result = compare(pbx, ari)
        if result == (0, 0):
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


def main() -> None:  # noqa: C901 - one linear script
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--rate", type=int, default=20)
    parser.add_argument("--talk", type=float, default=4.0, help="seconds per call")
    parser.add_argument("--cut-every", type=float, default=120.0)
    parser.add_argument("--check-every", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the report goes")
    args = parser.parse_args()
    total = args.minutes * 60
    started_sandbox = False
    if not sandbox_running():
        done = sandbox("up")
        if done.returncode:
            raise SystemExit(f"sandbox did not start:\n{done.stdout}{done.stderr}")
        started_sandbox = True
    work = Path(tempfile.mkdtemp(prefix="pbx-soak-"))
    ari, proxy = Ari(), CuttableProxy()
    pbx = PbxServer(work / "pbx", proxy.url, f"pbxcontrol-soak-{int(time.time())}")
    pool = SippPool(work / "sipp", tag="soak")
    report: dict = {
        "minutes": args.minutes,
        "rate": args.rate,
        "faults": [],
        "checks": [],
        "memory_mb": [],
    }
    querier = Querier(pbx)
    try:
        pbx.provision()
        pbx.start()
        calls = int(args.rate * total)
        pool.phone_answers("alice", ring_ms=200, calls=calls * 2, timeout_s=int(total + 300))
        pool._start(
            "carrier-uac",
            TRUNK_IP,
            [
                "-sf",
                str(SIPP_DIR / "uac.xml"),
                "-p",
                str(UAC_PORT),
                "-mp",
                "6300",
                "-s",
                "0201112222",
                "-key",
                "cnum",
                "0207946000",
                "-key",
                "cname",
                "Dentist",
                "-d",
                str(int(args.talk * 1000)),
                "-r",
                str(args.rate),
                "-l",
                str(args.rate * int(args.talk + 4)),
                "-cid_str",
                "soak-%u@%s",
                ASTERISK_SIP,
            ],
            calls=calls,
            timeout_s=int(total + 300),
        )
        querier.start()
        t0 = time.monotonic()
        next_cut, next_check, next_mem = args.cut_every, args.check_every, 0.0
        restarted = killed = False
        while (elapsed := time.monotonic() - t0) < total:
            if elapsed >= next_mem:
                report["memory_mb"].append([round(elapsed), *memory_mb(pbx)])
                next_mem += 30
            fault = None
            if not restarted and elapsed >= 0.45 * total:
                restarted, fault = True, "asterisk restart"
                sandbox("cli", "core restart now")
                deadline = time.monotonic() + 90
                while not ari.answers() and time.monotonic() < deadline:
                    time.sleep(0.5)
            elif not killed and elapsed >= 0.70 * total:
                killed, fault = True, "kill -9 pbxcontrol"
                pbx.kill9()
                time.sleep(2)  # calls start and end meanwhile
                pbx.start(timeout=60)
            elif elapsed >= next_cut:
                next_cut += args.cut_every
                fault = "websocket cut"
                proxy.cut()
            if fault:
                seconds = converge(pbx, ari)
                report["faults"].append(
                    {"at_s": round(elapsed), "fault": fault, "reconverged_s": seconds}
                )
                print(f"{elapsed:7.0f}s {fault}: reconverged in {seconds} s", flush=True)
            if elapsed >= next_check:
                next_check += args.check_every
                result = compare(pbx, ari)
                report["checks"].append([round(elapsed), result])
            time.sleep(0.5)
        querier.stop_flag.set()
        pool.stop()  # no new calls; Asterisk hangs up the rest
        for chan in ari.channels():
            ari.hangup(chan["id"])
        end = converge(pbx, ari, 60)
        report["final"] = {
            "reconverged_s": end,
            "api_legs": len(pbx.list("admin", customer="system") or []),
            "ari_channels": len(ari.channels()),
        }
        exit_status = pbx.stop()
        with sqlite3.connect(work / "pbx" / "pbx.db") as db:
            report["integrity_check"] = db.execute("PRAGMA integrity_check").fetchone()[0]
        report["sigterm_exit"] = exit_status
    finally:
        querier.stop_flag.set()
        pool.stop()
        for chan in ari.channels():  # also when interrupted: leave Asterisk empty
            ari.hangup(chan["id"])
        if pbx.proc is not None:
            pbx.stop()
        proxy.close()
        if started_sandbox:
            sandbox("down")
    checks = [c for _, c in report["checks"] if c is not None]
    mem = [m for _, m, _, _ in report["memory_mb"] if m]
    anon = [a for _, _, a, _ in report["memory_mb"] if a]
    report["summary"] = {
        "checks": len(checks),
        "checks_exact": sum(1 for c in checks if c == (0, 0)),
        "max_missing": max((c[0] for c in checks), default=0),
        "max_left_over": max((c[1] for c in checks), default=0),
        "reconvergence_s": [f["reconverged_s"] for f in report["faults"]],
        "memory_first_last_max_mb": [round(mem[0], 1), round(mem[-1], 1), round(max(mem), 1)]
        if mem
        else None,
        "heap_first_last_max_mb": [anon[0], anon[-1], max(anon)] if anon else None,
        "api_ok": querier.ok,
        "api_errors": querier.errors,
        "api_unanswered": querier.unanswered,
        "api_p50_ms": round(statistics.median(querier.latencies), 2) if querier.latencies else None,
    }
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["summary"], indent=1))
    print(
        f"final: {report['final']}, integrity: {report['integrity_check']}, "
        f"SIGTERM exit: {report['sigterm_exit']}; details in {args.out}"
    )


if __name__ == "__main__":
    main()
