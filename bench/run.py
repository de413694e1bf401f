"""`make bench`: every benchmark of issue 6, each figure against a baseline of the same run.

    .venv/bin/python bench/run.py [--only PART,...] [--quick] [--output FILE]

Parts: views, ingest, provision, stream, fleet, blast, fleetdb, loginflood (no Asterisk; fleet
starts a PostgreSQL of its own, `--machines 1,10,50 --minutes 3` its sizes; fleetdb uses the
sandbox PostgreSQL); history (no Asterisk; SQLite and the PostgreSQL sandbox, started if it is
not running); ari, lag, memory (the sandbox Asterisk: started if it is not running, and then
stopped at the end of the run; they wait while e2e tests run; lag includes the wrk figures).
Prints a table and writes
bench/results.json (every figure by name).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import asterisk, common  # noqa: E402

PARTS = (
    "views",
    "ingest",
    "provision",
    "ari",
    "lag",
    "memory",
    "stream",
    "fleet",
    "blast",
    "history",
    "fleetdb",
    "loginflood",
)
PREFIXES = {
    "views": ("views.",),
    "ingest": ("ingest.",),
    "ari": ("ari.",),
    "lag": ("lag.", "http."),
    "memory": ("memory.",),
    "provision": ("provision.",),
    "stream": ("stream.",),
    "fleet": ("fleet.",),
    "blast": ("blast.",),
    "history": ("history.",),
    "fleetdb": ("fleetdb.",),
    "loginflood": ("loginflood.",),
}


def machine() -> dict[str, object]:
    cpu = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    except OSError:
        mem_kb = 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": round(mem_kb / 2**20, 1),
        "python": platform.python_version(),
        "kernel": platform.release(),
        "sqlite": __import__("sqlite3").sqlite_version,
    }


def run_part(name: str, results: common.Results, quick: bool, args=None) -> None:
    if name == "fleet":
        from bench import fleet

        machines = [int(m) for m in (args.machines if args else "1,10,50").split(",")]
        fleet.run(results, quick, machines, args.minutes if args else None)
    elif name == "blast":
        from bench import blast

        blast.run(results, quick)
    elif name == "views":
        from bench import views

        views.run(results, quick)
    elif name == "ingest":
        from bench import ingest

        ingest.bench(results, quick)
    elif name == "provision":
        from bench import provision

        provision.run(results, quick)
    elif name == "stream":
        from bench import stream

        stream.run(results, quick)
    elif name == "history":
        from bench import history

        history.run(results, quick)
    elif name == "lag":
        from bench import load

        load.run_lag(results, quick)
    elif name == "fleetdb":
        from bench import fleetdb

        fleetdb.run(results, quick)
    elif name == "memory":
        from bench import memory

        memory.run_memory(results, quick)
    elif name == "loginflood":
        from bench import loginflood

        loginflood.run(results, quick)
    else:
        from bench import live

        live.run_ari(results, quick)


def run_parts(parts: list[str], results: common.Results, quick: bool, args=None) -> list[str]:
    failed = []
    for part in parts:
        print(f"== {part}", flush=True)
        started = time.perf_counter()
        try:
            run_part(part, results, quick, args)
        except Exception as exc:  # one broken part must not lose the others' figures
            traceback.print_exc()
            failed.append(f"{part}: {exc}")
        print(f"   ({time.perf_counter() - started:.0f} s)", flush=True)
    return failed


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--only",
        default=",".join(PARTS),
        help=f"comma-separated parts (default: all of {','.join(PARTS)})",
    )
    parser.add_argument("--quick", action="store_true", help="smaller sizes, shorter runs")
    parser.add_argument("--output", default=str(ROOT / "bench" / "results.json"))
    parser.add_argument(
        "--machines", default="1,10,50", help="fleet: the numbers of stand-in machines to run"
    )
    parser.add_argument(
        "--minutes", type=float, default=None, help="fleet: the busy hour's measured minutes"
    )
    args = parser.parse_args()
    parts = [p.strip() for p in args.only.split(",") if p.strip()]
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; parts are {', '.join(PARTS)}")
    results = common.Results()
    results.info.update(
        machine=machine(),
        quick=args.quick,
        parts=parts,
        started=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        commit=_commit(),
    )
    try:
        failed = run_parts(parts, results, args.quick, args)
    finally:
        asterisk.release()
    results.info["failed"] = failed
    print()
    print(common.table(results))
    if failed:
        print("\nFAILED: " + "; ".join(failed))
    output = Path(args.output)
    output.write_text(json.dumps(merged(output, parts, results), indent=2) + "\n")
    print(f"\nwritten {output}")
    return 1 if failed else 0


def merged(output: Path, parts: list[str], results: common.Results) -> dict:
    """This run's figures, plus those of parts not run this time from the previous file (each
    keeps the `info` of the run that measured it under `runs`)."""
    try:
        previous = json.loads(output.read_text())
    except (OSError, ValueError):
        previous = {}
    prefixes = tuple(p for part in parts for p in PREFIXES[part])
    figures = {
        name: f for name, f in previous.get("figures", {}).items() if not name.startswith(prefixes)
    }
    figures.update({name: f.as_json() for name, f in results.figures.items()})
    runs = {part: info for part, info in previous.get("runs", {}).items() if part not in parts}
    runs.update({part: results.info for part in parts})
    return {"runs": runs, "figures": dict(sorted(figures.items()))}


def _commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    sys.exit(main())
