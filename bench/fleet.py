"""A provider's fleet (issue 21): M stand-in Asterisk machines (bench/fleetari.py, replaying
real recorded calls with ids unique per machine and copy), a `pbxcontrol record` per machine
and a standby for every fifth, two `pbxcontrol api`, 1,000 stream subscribers, one PostgreSQL
(scripts/postgres-sandbox, an instance of this run's own, a fresh database per scale).

    .venv/bin/python bench/run.py --only fleet [--machines 1,10,50] [--minutes 2]

Per M: the floors (bench/fleetfloor.py: the raw PostgreSQL write rate of the same row writes,
one connection per machine; bare websocket readers of the same bytes), then
- burst: every machine sends its backlog's setups at once (12 legs per copy, all up at the
  peak), then its teardowns; timed from the first byte to both APIs listing exactly the union
  of the machines' GET /channels; pg_stat_activity / pg_locks sampled meanwhile; every field of
  every leg then checked against the reference (the recorder's own LiveLegs fed the same events
  in process);
- the system and two resellers' views at the peak, each computed after a change (server
  side, from the API's access log): Reseller A owns the customers of every machine's phones,
  Reseller B ("solo") those of one machine's (fleetcalls.SOLO_MACHINE), whatever the fleet's
  size; the change (a call on machine 1) is in the system's and A's results, not in B's;
- busy hour: M x 300 concurrent calls of mean 180 s (warm-up: the 300 arrive over the first
  third), push latency from a stand-in's send of ChannelCreated to a subscriber's upsert;
- recovery: PostgreSQL stopped for 30 s under the busy hour, then started; the stand-ins stop
  sending once it is back; time until both APIs list exactly the union.
Websocket reopens per recorder are counted from their logs in every phase.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
import time
import traceback
from pathlib import Path

from sqlalchemy import text

from bench import common, fleetcalls, fleetfloor
from bench.fleetrun import COPIES, KEEP, Fleet, PgSampler
from bench.fleetsite import Postgres, rss_mb

CALLS, HOLD = 300, 180.0
OUTAGE = 30.0
POKED = re.compile(r"m\d+p\d+$")  # the legs the views' changes added (not in the burst)
SERVED = re.compile(r"GET /api/json/calls/active/list/ 200 ([\d.]+)ms")


def run(results: common.Results, quick: bool, machines=(1, 10, 50), minutes=None) -> None:
    minutes = minutes if minutes is not None else (1.0 if quick else 3.0)
    with tempfile.TemporaryDirectory(prefix="pbx-fleet-") as tmp:
        pg = Postgres(Path(tmp))
        pg.up()
        try:
            failed = []
            for m in machines:  # one scale that fails must not lose the others' figures
                print(f"  -- {m} machine(s), load average {os.getloadavg()[0]:.1f}", flush=True)
                try:
                    Scale(Path(tmp) / f"m{m}", pg, m, minutes).run(results)
                except Exception as exc:  # noqa: BLE001
                    traceback.print_exc()
                    failed.append(f"{m} machines: {exc}")
            if failed:
                raise RuntimeError("; ".join(failed))
        finally:
            pg.down()


class Scale:
    def __init__(self, workdir: Path, pg: Postgres, machines: int, minutes: float) -> None:
        self.dir, self.pg, self.m, self.minutes = workdir, pg, machines, minutes
        self.prefix = f"fleet.m{machines}."
        self.figures: dict[str, object] = {}

    def add(self, results, name: str, value: float, unit: str, **kw) -> None:
        results.add(self.prefix + name, value, unit, **kw)
        self.figures[name] = value

    def run(self, results: common.Results) -> None:
        self.dir.mkdir(parents=True)
        print("  reference and floors", flush=True)
        expected, batches = fleetfloor.reference(self.m, COPIES, KEEP)
        events = sum(  # the burst's, setups and teardowns
            sum(map(len, fleetcalls.burst(m, COPIES, KEEP))) for m in range(1, self.m + 1)
        )
        raw = fleetfloor.raw_pg(self.pg.database(f"floor{self.m}"), batches, events)
        bare = fleetfloor.bare_readers(self.m, COPIES, KEEP)
        del batches
        fleet = Fleet(self.dir, self.pg.database(f"fleet{self.m}"), self.m)
        try:
            fleet.start()
            self.burst(results, fleet, expected, events, raw, bare)
            self.busy_and_recovery(results, fleet)
            self.costs(results, fleet)
        finally:
            fleet.stop()

    # -- burst --
    def burst(self, results, fleet: Fleet, expected: dict, events: int, raw, bare) -> None:
        """The setups, to the peak; the views there; the teardowns. The ingest time is the
        two sends' (first byte to both APIs equal to the union), not the views' between."""
        sampler = PgSampler(fleet.direct)
        wal, pg_cpu = fleet.wal_lsn(), self.pg.cpu_seconds()
        at_peak = self._send(results, fleet, "burst")
        sampler.stop()
        peak = len(fleet.stand_ins.channels())
        self.figures["peak_legs"] = peak
        self.views(results, fleet)
        seconds = at_peak + self._send(results, fleet, "teardown")
        rate = events / seconds
        self.figures["burst_events"] = events
        self.figures["wal_bytes_per_event"] = (fleet.wal_lsn() - wal) / events
        self.figures["pg_cpu_s_per_kevent"] = (self.pg.cpu_seconds() - pg_cpu) / events * 1000
        for name, floor, share in (("raw PostgreSQL", raw, 0.7 if self.m <= 10 else 0.5),
                                   ("bare websocket readers", bare, None)):  # fmt: skip
            self.add(
                results, f"burst ingest vs {name}", rate, "ev/s",
                baseline=floor["events_per_s"], baseline_name=f"{name} (fleet bench)",
                target=f"ratio >= {share}" if share else "",
                met=rate / floor["events_per_s"] >= share if share else None,
                note=f"{events} events, {peak} legs at the peak (reached after {at_peak:.1f} s)"
                ", until both APIs list the union",
            )  # fmt: skip
        # The ceiling of the first ratio on this host: readers that only read and parse.
        self.add(
            results, "burst: bare websocket readers vs raw PostgreSQL", bare["events_per_s"],
            "ev/s", baseline=raw["events_per_s"], baseline_name="raw PostgreSQL (fleet bench)",
            note="what no recorder can beat on this host: reading and json.loads alone",
        )  # fmt: skip
        problems = [
            p
            for api in fleet.apis
            for p in fleetfloor.compare(
                {k: v for k, v in fleet.rows(api).items() if not POKED.search(k[1])}, expected
            )
        ]
        bad = fleetfloor.bad_legs(problems)  # on both APIs
        self.add(results, "burst legs wrong on an API", bad, "legs", target="== 0",
                 met=not problems, note="; ".join(problems[:6] + problems[-1:]))  # fmt: skip
        self.reopens(results, fleet, "burst")
        print("  top waits during the burst: " + sampler.top(), flush=True)
        self.figures["burst_waits"] = sampler.top()

    def _send(self, results, fleet: Fleet, part: str) -> float:
        """Seconds from the stand-ins' first byte of `part` to both APIs equal to the union."""
        lines = fleet.stand_ins.tell(part, "burst-done")
        started = min(s for line in lines for s, _, _ in json.loads(line).values())
        return self.converge(results, fleet, fleet.stand_ins.channels(), 180, part) - started

    def converge(self, results, fleet: Fleet, union: dict, timeout: float, phase: str) -> float:
        """When both APIs listed the union; when they never did, the figure says how they
        differ and the run goes on (the time is then the timeout's, flagged)."""
        try:
            return fleet.converge(union, timeout)
        except RuntimeError as exc:
            self.add(results, f"{phase}: APIs not the union", 1, "", target="== 0", met=False,
                     note=str(exc)[:400])  # fmt: skip
            return time.time()

    def reopens(self, results, fleet: Fleet, phase: str, fault: bool = False) -> None:
        counts = fleet.reopens()
        total = sum(counts.values()) - sum(fleet.reopened.values())
        per = {n: c - fleet.reopened.get(n, 0) for n, c in counts.items()}
        fleet.reopened = counts
        self.add(
            results, f"{phase} websocket reopens", total, "reopens",
            target="" if fault else "== 0", met=None if fault else total == 0,
            note=f"{sum(1 for c in per.values() if c)} of {len(per)} recorders",
        )  # fmt: skip

    # -- views --
    def views(self, results, fleet: Fleet) -> None:
        mine = {"customer": "recursive", "recursive": "1"}
        for who, params, name in (("admin", {"customer": "system"}, "system view"),
                                  ("reseller", mine, "reseller view"),
                                  ("solo", mine, "one machine's reseller view")):  # fmt: skip
            served, rows = [], 0
            for _ in range(20):
                fleet.stand_ins.tell("poke", "poked", first=True)
                time.sleep(0.3)  # recorded and announced; the next request computes the view
                mark = len(fleet.apis[0].text())
                rows = len(fleet.list(fleet.apis[0], who, **params))
                served += [float(v) for v in SERVED.findall(fleet.apis[0].text()[mark:])]
            p50 = common.percentile(served, 50)
            self.add(
                results, f"{name} after a change", p50, "ms",
                target="<= 25" if name == "system view" else "",
                met=p50 <= 25 if name == "system view" else None,
                note=f"server side (access log) median of 20, {rows} rows; p90 "
                f"{common.percentile(served, 90):.1f} ms",
            )  # fmt: skip

    # -- busy hour and recovery --
    def busy_and_recovery(self, results, fleet: Fleet) -> None:
        warmup = min(HOLD / 2, 30 * self.minutes)  # the 300 calls arrive at 2x the rate
        window = self.minutes * 60
        fleet.stand_ins.tell(f"busy {warmup + window + OUTAGE + 60} {CALLS} {HOLD} {warmup}")
        time.sleep(warmup)
        before = fleet.sent()
        cpu = fleet.cpu_seconds()
        pg_cpu, wal = self.pg.cpu_seconds(), fleet.wal_lsn()
        sampler = PgSampler(fleet.direct)  # a writer's open transaction holds the head back
        time.sleep(window)
        sampler.stop()
        print("  busy hour's database: " + sampler.top(), flush=True)
        self.figures["busy_waits"] = sampler.top()
        sent = fleet.sent() - before
        self.figures["recorder_cpu_pct"] = (fleet.cpu_seconds() - cpu) / window / self.m * 100
        self.figures["busy_pg_cpu_pct"] = (self.pg.cpu_seconds() - pg_cpu) / window * 100
        self.figures["busy_wal_bytes_per_event"] = (fleet.wal_lsn() - wal) / max(sent, 1)
        self.figures["live_legs_busy"] = len(fleet.stand_ins.channels())
        self.figures["api_rss_busy_mb"] = max(rss_mb(a.proc.pid) for a in fleet.apis if a.proc)
        self.figures["recorder_rss_mb"] = max(rss_mb(r.proc.pid) for r in fleet.recorders if r.proc)
        ended = time.time()
        self.add(
            results,
            "busy hour events",
            sent / window,
            "ev/s",
            note=f"sent by the stand-ins, {window:.0f} s after a {warmup:.0f} s warm-up",
        )
        self.reopens(results, fleet, "busy hour")
        self.latency(results, fleet, ended)
        self.pg.stop()
        time.sleep(OUTAGE)
        back = self.pg.start()
        fleet.stand_ins.tell("halt", "busy-done")
        union = fleet.stand_ins.channels()
        recovered = self.converge(results, fleet, union, 180, "recovery") - back
        self.add(
            results,
            "recovery",
            recovered,
            "s",
            target="<= 15",
            met=recovered <= 15,
            note=f"{OUTAGE:.0f} s PostgreSQL outage under the busy hour; {len(union)} legs",
        )
        self.reopens(results, fleet, "recovery", fault=True)

    def latency(self, results, fleet: Fleet, ended: float) -> None:
        report = fleet.subscriber_report()
        created = [
            (uid, at)
            for line in fleet.stand_ins.tell("report", "report")
            for machine_list in json.loads(line)["created"].values()
            for uid, at in machine_list
            if at < ended - 5  # the last ones have not had the time
        ]
        first = report["first"]
        delays = [(first[uid] - at) * 1000 for uid, at in created if uid in first]
        self.split(results, fleet, {uid: at for uid, at in created if uid in first}, first)
        lost = len(created) - len(delays)
        if not delays:
            self.add(results, "push latency p99", float("nan"), "ms",
                     note=f"{len(created)} new legs sent, none seen by a tracked subscriber "
                     f"({len(first)} legs seen; their process used {_busy(report):.0%} of a "
                     "core)")  # fmt: skip
            return
        p50, p99 = common.percentile(delays, 50), common.percentile(delays, 99)
        self.figures["push_p99"] = p99
        self.add(results, "push latency p50", p50, "ms")
        self.add(
            results,
            "push latency p99",
            p99,
            "ms",
            target="<= 250",
            met=p99 <= 250,
            note=f"{len(delays)} new legs, {lost} never seen by a tracked subscriber; the "
            f"tracked subscribers' process used {_busy(report):.0%} of a core",
        )

    def split(self, results, fleet: Fleet, sent: dict[str, float], seen: dict) -> None:
        """The push latency in two: the stand-in's send to its recorder's journal entry for
        the leg (`at`, the recorder's clock when it appended, first in its transaction), and
        from there to the subscriber (the rest of that transaction, the commit-ordered
        horizon, the API's stream hub, the socket)."""
        with fleet.engine().connect() as conn:
            appended = dict(conn.execute(
                text("SELECT uniqueid, min(at) FROM leg_changes WHERE uniqueid = ANY(:uids) "
                     "GROUP BY uniqueid"), {"uids": list(sent)},
            ).all())  # fmt: skip
        pairs = [(appended[u] - sent[u], seen[u] - appended[u]) for u in sent if u in appended]
        if not pairs:
            return
        for i, part in enumerate(("send -> journal entry", "journal entry -> subscriber")):
            ms = [p[i] * 1000 for p in pairs]
            self.add(results, f"push latency p99, {part}", common.percentile(ms, 99), "ms",
                     note=f"p50 {common.percentile(ms, 50):.1f} ms, {len(pairs)} legs")  # fmt: skip

    def costs(self, results, fleet: Fleet) -> None:
        f = self.figures
        with fleet.engine().connect() as conn:
            size = conn.execute(text("SELECT pg_total_relation_size('leg_history')")).scalar()
            history = conn.execute(text("SELECT count(*) FROM leg_history")).scalar() or 1
        f["db_mb_per_million_history_legs"] = size / history * 1e6 / 2**20
        f["api_rss_mb"] = fleet.api_rss
        print("  costs: " + json.dumps(f, default=str), flush=True)
        results.info.setdefault("fleet", {})[self.m] = f


def _busy(report: dict) -> float:
    """The share of a core the tracked subscribers' process used since it started (near 1:
    it may be what lags, not the APIs)."""
    return report["cpu"] / max(report["wall"], 1e-9)


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--machines", default="1,10,50")
    parser.add_argument("--minutes", type=float, default=None)
    args = parser.parse_args()
    results = common.Results()
    run(results, False, [int(m) for m in args.machines.split(",")], args.minutes)
    print(common.table(results))


if __name__ == "__main__":
    sys.exit(main())
