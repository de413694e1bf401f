"""Ingest: a recorded real event stream replayed through the recorder into SQLite (in process;
bench/wsingest.py does it through a real websocket into `pbxcontrol serve`).

The stream is the recordings of tests/recordings/ repeated with fresh channel ids until it has
at least --events events; the baseline is json.loads over the same bytes, in the same run.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pbxcontrol import provisioning  # noqa: E402
from pbxcontrol.ari.events import parse_event  # noqa: E402
from pbxcontrol.db import migrate  # noqa: E402
from pbxcontrol.db.engine import make_engine, make_sessionmaker  # noqa: E402
from pbxcontrol.recorder import store  # noqa: E402
from pbxcontrol.recorder.live import LiveLegs  # noqa: E402
from pbxcontrol.recorder.provisioned import ProvisionedCache  # noqa: E402

RECORDINGS = ROOT / "tests" / "recordings"
PROVISION = ROOT / "sandbox" / "provision.json"


def build_stream(target: int) -> list[str]:
    """Real events, with ids rewritten per copy so every call is a new one."""
    scenarios = []
    for path in sorted(RECORDINGS.glob("*.jsonl")):
        events = [
            json.dumps(r["data"]) for r in map(json.loads, path.open()) if r["type"] == "event"
        ]
        ids = sorted({i for e in events for i in _ids(e)}, key=len, reverse=True)
        scenarios.append((events, ids))
    stream: list[str] = []
    copy = 0
    while len(stream) < target:
        copy += 1
        for events, ids in scenarios:
            for text in events:
                for old in ids:  # ids look like 1795762088.85: unique per copy
                    text = text.replace(f'"{old}"', f'"{old}c{copy}"')
                stream.append(text)
    return stream


def _ids(text: str):
    obj = json.loads(text)
    for key in ("channel", "peer", "caller"):
        ch = obj.get(key)
        if isinstance(ch, dict) and "id" in ch:
            yield ch["id"]
            linked = (ch.get("channelvars") or {}).get("CHANNEL(linkedid)")
            if linked:
                yield linked


def run(events: int, batch: int) -> dict[str, float]:
    stream = build_stream(events)
    raw_bytes = sum(len(s) for s in stream)
    t0 = time.perf_counter()
    for text in stream:
        json.loads(text)
    baseline = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        engine = make_engine(f"sqlite:///{tmp}/bench.db")
        migrate.upgrade(engine)
        sessions = make_sessionmaker(engine)
        with sessions.begin() as session:
            provisioning.apply(session, json.loads(PROVISION.read_text()))
        recorder = LiveLegs(1, ProvisionedCache(sessions).get)
        t0 = time.perf_counter()
        for start in range(0, len(stream), batch):
            for seq, text in enumerate(stream[start : start + batch], start):
                event = parse_event(text)
                if event is not None:
                    recorder.apply(event, seq)
            with sessions.begin() as session:
                done = store.flush(recorder, session)
            done()
        elapsed = time.perf_counter() - t0
        engine.dispose()
    return {
        "ingest_events": len(stream),
        "ingest_megabytes": round(raw_bytes / 1e6, 1),
        "ingest_events_per_s": round(len(stream) / elapsed),
        "json_loads_events_per_s": round(len(stream) / baseline),
        "ingest_ratio_to_json_loads": round(baseline / elapsed, 3),
    }


def bench(results, quick: bool) -> None:
    """Target 3 for bench/run.py: >= 200,000 events (20,000 with --quick), in process and
    through a real websocket (bench/wsingest.py)."""
    from bench import wsingest

    figures = run(20_000 if quick else 200_000, 200)
    rate, base_rate = figures["ingest_events_per_s"], figures["json_loads_events_per_s"]
    results.add(
        "ingest.events_per_s",
        rate,
        "ev/s",
        baseline=base_rate,
        baseline_name="json.loads alone over the same bytes",
        target=">=20000, ratio>=0.2",
        met=rate >= 20_000 and figures["ingest_ratio_to_json_loads"] >= 0.2,
        note=f"{figures['ingest_events']} real events replayed, "
        f"{figures['ingest_megabytes']} MB, transactions of 200 events",
    )
    ws = wsingest.run(20_000 if quick else 200_000, 3)
    print(f"  websocket pairs (bare, recorder ev/s): {ws}", flush=True)
    wsingest.add_figures(results, ws)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.batch), indent=2))


if __name__ == "__main__":
    main()
