"""The realistic single-machine blast (issue 21): 300 copies of a real 5-call capture
(bench/fleetcalls.py's CALL_SET: 12 legs, recorded from Asterisk 22) with fresh ids, their
setups interleaved so that all 3,600 legs are up at once, then their teardowns but one copy's,
every channel with the `channelvars` the sample etc/asterisk/ari.conf configures; sent by a
stand-in Asterisk (bench/fleetari.py) as fast as the socket takes them into `pbxcontrol serve`
(SQLite, the one-machine install). Timed from the first byte to the API showing the final state
(exactly the channels the stand-in lists, each in its state), against a bare reader
(websocket-client + json.loads, nothing stored) fed the same bytes by the same server code;
pairs interleaved, a fresh stand-in each run.

    .venv/bin/python bench/run.py --only blast [--quick]
"""

from __future__ import annotations

import base64
import json
import sys
import time
from pathlib import Path

import requests
import websocket

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench import common, fleetcalls  # noqa: E402
from bench.fleetsite import AUTH, StandIns  # noqa: E402
from bench.wsingest import RecorderService  # noqa: E402

COPIES, KEEP = 300, 1
CHANNELVARS = {"CHANNEL(linkedid)", "CALLERID(dnid)", "CALLERID(pres)"}  # etc/asterisk/ari.conf


def check_channelvars() -> None:
    """Every channel of the capture carries the channelvars of the sample ari.conf (it does:
    the capture was made with it); a capture without them would not be this blast."""
    for name in fleetcalls.CALL_SET:
        call = fleetcalls.call(name)
        for _, text in call.setup + call.teardown:
            event = json.loads(text.replace("\0", "t").replace("\1", "t"))
            for channel in fleetcalls._channels(event):
                if set(channel.get("channelvars") or {}) != CHANNELVARS:
                    raise RuntimeError(f"{name}: a channel without the sample channelvars")


def bare_run() -> tuple[float, int]:
    stand_in = StandIns(1, COPIES, KEEP)
    try:
        token = base64.b64encode(":".join(AUTH).encode()).decode()
        ws = websocket.WebSocket(skip_utf8_validation=True)
        url = stand_in.url(1)
        ws.connect(
            url.replace("http", "ws", 1) + "/events?app=bare&subscribeAll=true",
            header=[f"Authorization: Basic {token}"],
            timeout=600,
        )
        requests.get(url + "/channels", auth=AUTH, timeout=30)
        events = sum(stand_in.burst_events[1])
        import threading

        sent: list[str] = []
        sender = threading.Thread(target=lambda: sent.extend(stand_in.tell("blast", "burst-done")))
        sender.start()
        for _ in range(events):
            json.loads(ws.recv())
        done = time.time()
        sender.join()
        ws.close()
    finally:
        stand_in.stop()
    start = json.loads(sent[0])["1"][0]
    return done - start, events


def recorder_run() -> tuple[float, int, int]:
    stand_in = StandIns(1, COPIES, KEEP)
    service = RecorderService(stand_in.url(1))
    try:
        service.start()
        with stand_in.cond:
            if not stand_in.cond.wait_for(lambda: 1 in stand_in.listed, timeout=60):
                raise RuntimeError("the recorder did not connect")
        time.sleep(0.5)  # its reconcile written
        line = stand_in.tell("blast", "burst-done")[0]
        start = json.loads(line)["1"][0]
        union = {c["id"]: c["state"] for c in stand_in.channels().values()}
        while True:
            count = _list(service, count="1")["count"]
            if count == len(union):
                done = time.time()
                rows = _list(service)
                if {r["uniqueid"]: r["status"] for r in rows} == union:
                    return done - start, sum(stand_in.burst_events[1]), _reopens(service)
            time.sleep(0.005)
    finally:
        service.stop()
        stand_in.stop()


def _reopens(service: RecorderService) -> int:
    """How often the recorder closed its events websocket during the run: a backlog over its
    bound (SPEC §12) drops the events read and not written and reconciles from GET /channels,
    which also ends at the final state — fast, but not an ingest of the events (answer times,
    destinations are lost), so such a run does not count."""
    text = (service.dir / "serve.log").read_text(errors="replace")
    return text.count("closing the events websocket") + text.count("events connection lost")


def _list(service: RecorderService, **params: str):
    body = service.get("calls/active/list", "admin", "admin-pass", customer="system", **params)
    answer = body.json()
    if "data" not in answer:
        raise RuntimeError(f"calls/active/list answered {answer}")
    return answer["data"]


def run(results: common.Results, quick: bool) -> None:
    check_channelvars()
    pairs = 1 if quick else 3
    bare, recorder, events, reopens = [], [], 0, []
    for _ in range(pairs):
        seconds, events = bare_run()
        bare.append(seconds)
        took, _, reopened = recorder_run()
        recorder.append(took)
        reopens.append(reopened)
    ratios = [b / r for b, r in zip(bare, recorder, strict=True)]
    ratio = common.median(ratios)
    results.add(
        "blast.recorder_websocket_reopens",
        sum(reopens),
        "reopens",
        target="== 0",
        met=not any(reopens),
        note="per run: " + ", ".join(map(str, reopens)) + " (a backlog over its bound, SPEC §12: "
        "the events read and not written dropped, the state reconciled from GET /channels)",
    )
    results.add(
        "blast.events_per_s",
        events / common.median(recorder),
        "ev/s",
        baseline=events / common.median(bare),
        baseline_name="a bare websocket reader (websocket-client, json.loads), same bytes",
        note=f"{events} real events, {fleetcalls.peak_legs(COPIES)} legs up at the peak, "
        f"into `pbxcontrol serve` (SQLite) until the API shows the final state; medians of "
        f"{pairs} interleaved pairs",
    )
    results.add(
        "blast.ratio_to_bare_reader",
        ratio,
        "x",
        target=">= 0.75, no reopen",
        met=ratio >= 0.75 and not any(reopens),
        note="bare time / recorder time per pair: "
        + ", ".join(f"{r:.3f}" for r in ratios)
        + ("" if not any(reopens) else " (runs with a reopen: not an ingest of the events)"),
    )


if __name__ == "__main__":
    out = common.Results()
    run(out, "--quick" in sys.argv)
    print(common.table(out))
