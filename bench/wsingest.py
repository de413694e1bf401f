"""Ingest through a real websocket: `pbxcontrol serve` recording a stand-in Asterisk
(bench/wsreplay.py) that replays recorded real events as fast as the socket takes, timed until
the API shows the final state; against a bare reader (websocket-client, `json.loads`, no
storage) fed the same way by the same server, in the same run, the two runs interleaved.

Both times run from the server's first byte of the replay (it starts when the client, having
the events websocket open, asks GET /ari/channels) to: the bare reader's last message decoded;
the first answer of `calls/active/list` (system view, polled every POLL_S) that holds the
sentinel leg and exactly the legs the replay leaves up. The recorder's figure thus includes one
poll's resolution and one API round trip.
"""

from __future__ import annotations

import argparse
import base64
import json
import select
import subprocess
import sys
import time
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import end, median  # noqa: E402
from bench.sandbox import Service  # noqa: E402
from bench.wsreplay import SENTINEL  # noqa: E402

POLL_S = 0.005
AUTH = ("pbxcontrol", "bench-secret")


class Replayer:
    """bench/wsreplay.py in a process of its own (it must not share our GIL)."""

    def __init__(self, events: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.wsreplay", "--events", str(events)],
            stdout=subprocess.PIPE,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            text=True,
        )
        assert self.proc.stdout is not None
        _, port, count, live = self.proc.stdout.readline().split()
        self.url = f"http://127.0.0.1:{port}/ari"
        self.events, self.live = int(count), int(live)

    def started(self) -> float:
        """The monotonic time the last replay started (blocks until it is reported)."""
        assert self.proc.stdout is not None
        if not select.select([self.proc.stdout], [], [], 120)[0]:
            raise RuntimeError("no replay within 120 s: did the client connect?")
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "replay":
            raise RuntimeError(f"the replay server said {line!r}")
        return float(line[1])

    def stop(self) -> None:
        end(self.proc)


def bare_run(replayer: Replayer) -> float:
    """Seconds from the replay's start until a bare reader has decoded every message."""
    token = base64.b64encode(":".join(AUTH).encode()).decode()
    ws = websocket.WebSocket(skip_utf8_validation=True)
    ws.connect(
        replayer.url.replace("http", "ws", 1) + "/events?app=bare&subscribeAll=true",
        header=[f"Authorization: Basic {token}"],
        timeout=30,
    )
    requests.get(replayer.url + "/channels", auth=AUTH, timeout=30)
    for _ in range(replayer.events):
        json.loads(ws.recv())
    done = time.monotonic()
    ws.close()
    return done - replayer.started()


class RecorderService(Service):
    """`pbxcontrol serve` (recorder and API in one process, the default) on the replayer."""

    def __init__(self, ari_url: str) -> None:
        super().__init__(app="pbxcontrol-wsingest")
        self.config.write_text(
            f"[database]\nurl = sqlite:///{self.dir / 'pbx.db'}\n"
            f"[http]\nhost = 127.0.0.1\nport = {self.port}\nthreads = 8\n"
            "[logging]\nlevel = WARNING\n[plugins]\nenabled = active_calls\n"
            f"[asterisk:1]\nari_url = {ari_url}\nusername = {AUTH[0]}\n"
            f"password = {AUTH[1]}\napp = pbxcontrol-wsingest\nsubscribe_all = yes\n"
        )


def recorder_run(replayer: Replayer) -> float:
    """Seconds from the replay's start until the API shows the state the replay leaves."""
    service = RecorderService(replayer.url)
    try:
        service.start()
        started = replayer.started()
        while True:
            body = service.get("calls/active/list", "admin", "admin-pass", customer="system")
            answer = body.json()
            if "data" not in answer:
                raise RuntimeError(f"calls/active/list answered {answer}")
            legs = {row["uniqueid"] for row in answer["data"]}
            if SENTINEL in legs:
                done = time.monotonic()
                if len(legs) != replayer.live:
                    raise RuntimeError(
                        f"API shows {len(legs)} legs, the replay leaves {replayer.live}"
                    )
                return done - started
            time.sleep(POLL_S)
    finally:
        service.stop()


def run(events: int, pairs: int) -> dict[str, object]:
    """`pairs` x (bare reader, recorder), interleaved, on one replay server."""
    replayer = Replayer(events)
    bare: list[float] = []
    recorder: list[float] = []
    try:
        for _ in range(pairs):
            bare.append(bare_run(replayer))
            recorder.append(recorder_run(replayer))
    finally:
        replayer.stop()
    ratios = [b / r for b, r in zip(bare, recorder, strict=True)]
    n = replayer.events
    return {
        "events": n,
        "bare_events_per_s": [round(n / s) for s in bare],
        "recorder_events_per_s": [round(n / s) for s in recorder],
        "ratios": [round(r, 3) for r in ratios],
        "median_ratio": round(median(ratios), 3),
        "median_bare_events_per_s": round(n / median(bare)),
        "median_recorder_events_per_s": round(n / median(recorder)),
    }


def add_figures(results, figures: dict) -> None:
    """The figures, in bench/run.py's results (part `ingest`)."""
    ratio = figures["median_ratio"]
    base = "a bare websocket reader (websocket-client, json.loads, no storage), same server"
    results.add(
        "ingest.ws_events_per_s",
        figures["median_recorder_events_per_s"],
        "ev/s",
        baseline=figures["median_bare_events_per_s"],
        baseline_name=base,
        note=f"{figures['events']} real events over a local websocket into `pbxcontrol serve` "
        f"(SQLite) until the API shows the final state; medians of "
        f"{len(figures['ratios'])} interleaved pairs",
    )
    results.add(
        "ingest.ws_ratio_to_bare_reader",
        ratio,
        "x",
        target=">= 0.5 (goal 1.0)",
        met=ratio >= 0.5,
        note="bare time / recorder time per pair: " + ", ".join(map(str, figures["ratios"])),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--pairs", type=int, default=3)
    args = parser.parse_args()
    print(json.dumps(run(args.events, args.pairs), indent=2))


if __name__ == "__main__":
    main()
