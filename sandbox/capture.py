#!/usr/bin/env python3
"""Record real Asterisk ARI traffic for scripted SIP call scenarios.

Needs the sandbox Asterisk (``scripts/asterisk-sandbox up``), ``sipp`` and the Python
packages ``requests`` and ``websocket-client``.

    python sandbox/capture.py all                 # every scenario
    python sandbox/capture.py busy mixmonitor     # some of them
    python sandbox/capture.py --list

Each scenario writes ``tests/recordings/<scenario>.jsonl``: one JSON object per line, in
arrival order::

    {"type": "info", "data": <GET /ari/asterisk/info>}                      (first line)
    {"type": "event", "data": <one websocket message, verbatim>}
    {"type": "channels", "label": "ringing", "data": <GET /ari/channels>}   (when taken)
    {"type": "variable", "channel": ID, "variable": "CHANNEL(linkedid)", "value": "..."}

A recording ends when every channel that appeared is destroyed, with a final ``channels``
snapshot (label ``after_hangup``) that is ``[]``.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
import websocket

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SIPP_DIR = HERE / "sipp"
DEFAULT_OUT = REPO / "tests" / "recordings"

ARI_BASE = os.environ.get("ARI_URL", "http://127.0.0.1:8088/ari").rstrip("/")
ARI_USER = os.environ.get("ARI_USER", "pbxcontrol")
ARI_PASS = os.environ.get("ARI_PASSWORD", "pbxcontrol-secret")
AMI_HOST, AMI_PORT = "127.0.0.1", 5038
APP = "capture"
ASTERISK = "127.0.0.1:5060"

# The sandbox layout (see sandbox/README.md)
TRUNK_IP = "127.0.0.3"
PHONES = {  # name: (ip, number, display name)
    "alice": ("127.0.0.5", "1001", "Alice Smith"),
    "bob": ("127.0.0.6", "1002", "Bob Jones"),
    "carol": ("127.0.0.7", "2001", "Carol Meyer"),
    "dave": ("127.0.0.8", "2002", "Dave Keller"),
}
UAC_PORT, UAS_PORT, TRUNK_UAS_PORT = 5070, 5080, 5090


class CaptureError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------
# AMI (only for the transfer scenarios: ARI cannot transfer channels outside Stasis)
# --------------------------------------------------------------------------------------
class AMI:
    def __init__(self, host: str = AMI_HOST, port: int = AMI_PORT) -> None:
        self.sock = socket.create_connection((host, port), timeout=5)
        self.buf = b""
        self._readline()  # banner
        resp = self.action(
            {"Action": "Login", "Username": ARI_USER, "Secret": ARI_PASS, "Events": "off"}
        )
        if resp.get("Response") != "Success":
            raise CaptureError(f"AMI login failed: {resp}")
        self._n = 0

    def _readline(self) -> str:
        while b"\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise CaptureError("AMI connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\r\n", 1)
        return line.decode("utf-8", "replace")

    def _read_block(self) -> dict[str, str]:
        block: dict[str, str] = {}
        while True:
            line = self._readline()
            if not line:
                if block:
                    return block
                continue
            key, _, value = line.partition(":")
            block[key.strip()] = value.strip()

    def action(self, fields: dict[str, str]) -> dict[str, str]:
        action_id = f"capture-{time.monotonic_ns()}"
        msg = "".join(f"{k}: {v}\r\n" for k, v in {**fields, "ActionID": action_id}.items())
        self.sock.sendall(msg.encode() + b"\r\n")
        while True:
            block = self._read_block()
            if block.get("ActionID") == action_id and "Response" in block:
                return block

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.action({"Action": "Logoff"})
        self.sock.close()


# --------------------------------------------------------------------------------------
# Recorder: websocket reader + REST snapshots, one ordered list of records
# --------------------------------------------------------------------------------------
class Recorder:
    def __init__(self) -> None:
        self.http = requests.Session()
        self.http.auth = (ARI_USER, ARI_PASS)
        self.records: list[dict[str, Any]] = []
        self.cond = threading.Condition()
        self.live: dict[str, dict[str, Any]] = {}  # channel id -> latest snapshot
        self.seen: dict[str, dict[str, Any]] = {}  # every channel ever seen
        self.events: list[dict[str, Any]] = []
        self.ws: websocket.WebSocket | None = None
        self.thread: threading.Thread | None = None
        self.closing = False
        self.error: BaseException | None = None

    # -- REST --
    def get(self, path: str, **params: Any) -> Any:
        r = self.http.get(f"{ARI_BASE}{path}", params=params, timeout=5)
        r.raise_for_status()
        return r.json()

    def snapshot(self, label: str) -> list[dict[str, Any]]:
        data = self.get("/channels")
        with self.cond:
            self.records.append({"type": "channels", "label": label, "data": data})
        return data

    def variable(self, channel_id: str, variable: str) -> str | None:
        r = self.http.get(
            f"{ARI_BASE}/channels/{channel_id}/variable", params={"variable": variable}, timeout=5
        )
        value = r.json().get("value") if r.status_code == 200 else None
        with self.cond:
            self.records.append(
                {"type": "variable", "channel": channel_id, "variable": variable, "value": value}
            )
        return value

    # -- websocket --
    def start(self) -> None:
        token = base64.b64encode(f"{ARI_USER}:{ARI_PASS}".encode()).decode()
        url = ARI_BASE.replace("http://", "ws://").replace("https://", "wss://")
        self.ws = websocket.create_connection(
            f"{url}/events?app={APP}",
            header=[f"Authorization: Basic {token}"],
            timeout=5,
            skip_utf8_validation=True,
        )
        # Every channel and bridge, as the recorder subscribes (not subscribeAll: its device
        # states can wedge Asterisk's ARI when the websocket closes).
        subscribed = self.http.post(
            f"{ARI_BASE}/applications/{APP}/subscription",
            params={"eventSource": "channel:,bridge:"},
            timeout=5,
        )
        subscribed.raise_for_status()
        self.ws.settimeout(0.5)
        self.thread = threading.Thread(target=self._read, name="ari-ws", daemon=True)
        self.thread.start()
        info = self.get("/asterisk/info")
        with self.cond:
            self.records.insert(0, {"type": "info", "data": info})

    def _read(self) -> None:
        assert self.ws is not None
        while not self.closing:
            try:
                msg = self.ws.recv()
            except websocket.WebSocketTimeoutException:
                continue
            except Exception as exc:  # connection closed
                if not self.closing:
                    self.error = exc
                with self.cond:
                    self.cond.notify_all()
                return
            if not msg:
                continue
            event = json.loads(msg)
            with self.cond:
                self.records.append({"type": "event", "data": event})
                self.events.append(event)
                chan = event.get("channel")
                if isinstance(chan, dict) and "id" in chan:
                    self.seen[chan["id"]] = chan
                    if event.get("type") == "ChannelDestroyed":
                        self.live.pop(chan["id"], None)
                    else:
                        self.live[chan["id"]] = chan
                self.cond.notify_all()

    def stop(self) -> None:
        self.closing = True
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.close()
        if self.thread is not None:
            self.thread.join(timeout=3)

    # -- waiting on events --
    def wait_for(self, what: str, pred: Callable[[], Any], timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        with self.cond:
            while True:
                result = pred()
                if result:
                    return result
                if self.error is not None:
                    raise CaptureError(f"websocket failed: {self.error}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CaptureError(f"timed out waiting for {what}")
                self.cond.wait(left)

    def channels_of(self, endpoint: str) -> list[dict[str, Any]]:
        """Live channels of an endpoint, e.g. 'PJSIP/alice' (caller holds the lock)."""
        return [c for c in self.live.values() if c["name"].startswith(endpoint + "-")]

    def wait_state(self, endpoint: str, state: str, timeout: float = 15.0) -> dict[str, Any]:
        return self.wait_for(
            f"{endpoint} in state {state}",
            lambda: next((c for c in self.channels_of(endpoint) if c["state"] == state), None),
            timeout,
        )

    def wait_up(self, count: int, timeout: float = 15.0) -> None:
        self.wait_for(
            f"{count} channels Up",
            lambda: sum(1 for c in self.live.values() if c["state"] == "Up") >= count,
            timeout,
        )

    def wait_event(
        self,
        etype: str,
        pred: Callable[[dict[str, Any]], bool] = lambda e: True,
        timeout: float = 15.0,
    ) -> dict[str, Any]:
        return self.wait_for(
            etype,
            lambda: next((e for e in self.events if e.get("type") == etype and pred(e)), None),
            timeout,
        )

    def wait_all_destroyed(self, timeout: float = 20.0) -> None:
        self.wait_for("every channel destroyed", lambda: self.seen and not self.live, timeout)

    def write(self, path: Path) -> None:
        with self.cond:
            lines = [json.dumps(r, separators=(",", ":")) for r in self.records]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------------------
# sipp processes
# --------------------------------------------------------------------------------------
class Sipp:
    """The sipp processes of one scenario; every one is stopped by its pid at the end."""

    def __init__(self, logdir: Path) -> None:
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []

    def _run(self, label: str, args: list[str]) -> subprocess.Popen[bytes]:
        cmd = [
            "sipp",
            *args,
            "-m",
            "1",
            "-nostdin",
            "-timeout",
            "60s",
            "-timeout_error",
            "-trace_err",
            "-error_file",
            str(self.logdir / f"{label}.errors"),
        ]
        with open(self.logdir / f"{label}.log", "wb") as log:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=self.logdir
            )
        self.procs.append((label, proc))
        return proc

    def uas(
        self,
        label: str,
        scenario: str,
        ip: str,
        port: int = UAS_PORT,
        duration_ms: int = 1000,
        media_port: int = 6100,
    ) -> None:
        self._run(
            label,
            [
                "-sf",
                str(SIPP_DIR / scenario),
                "-i",
                ip,
                "-p",
                str(port),
                "-mp",
                str(media_port),
                "-d",
                str(duration_ms),
            ],
        )

    def uac(
        self,
        label: str,
        scenario: str,
        ip: str,
        number: str,
        cnum: str,
        cname: str,
        duration_ms: int = 2000,
        media_port: int = 6000,
    ) -> None:
        self._run(
            label,
            [
                "-sf",
                str(SIPP_DIR / scenario),
                "-i",
                ip,
                "-p",
                str(UAC_PORT),
                "-mp",
                str(media_port),
                "-s",
                number,
                "-key",
                "cnum",
                cnum,
                "-key",
                "cname",
                cname,
                "-d",
                str(duration_ms),
                ASTERISK,
            ],
        )

    def wait(self, timeout: float = 30.0) -> dict[str, int | None]:
        deadline = time.monotonic() + timeout
        codes: dict[str, int | None] = {}
        for label, proc in self.procs:
            try:
                codes[label] = proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                codes[label] = None
        return codes

    def stop(self) -> None:
        for _, proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(3)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()

    def report(self) -> str:
        out = []
        for label, proc in self.procs:
            errors = self.logdir / f"{label}.errors"
            text = errors.read_text(errors="replace").strip() if errors.exists() else ""
            out.append(f"  sipp {label}: exit {proc.returncode}" + (f"\n{text}" if text else ""))
        return "\n".join(out)


# --------------------------------------------------------------------------------------
# scenarios
# --------------------------------------------------------------------------------------
SCENARIOS: dict[str, Callable[[Run], None]] = {}


def scenario(fn: Callable[[Run], None]) -> Callable[[Run], None]:
    SCENARIOS[fn.__name__] = fn
    return fn


class Run:
    def __init__(self, rec: Recorder, sipp: Sipp) -> None:
        self.rec, self.sipp = rec, sipp

    def phone_uas(self, name: str, scenario_file: str = "uas_answer.xml", **kw: Any) -> None:
        self.sipp.uas(name, scenario_file, PHONES[name][0], **kw)

    def phone_uac(self, name: str, number: str, scenario_file: str = "uac.xml", **kw: Any) -> None:
        ip, own, display = PHONES[name]
        self.sipp.uac(f"{name}-uac", scenario_file, ip, number, own, display, **kw)

    def carrier_uas(self, scenario_file: str = "uas_answer.xml", **kw: Any) -> None:
        self.sipp.uas(
            "carrier-uas", scenario_file, TRUNK_IP, port=TRUNK_UAS_PORT, media_port=6200, **kw
        )

    def carrier_uac(
        self, did: str, cnum: str, cname: str, scenario_file: str = "uac.xml", **kw: Any
    ) -> None:
        self.sipp.uac("carrier-uac", scenario_file, TRUNK_IP, did, cnum, cname, **kw)

    def settle(self) -> None:
        time.sleep(0.3)  # let the UAS sockets bind before the first INVITE


@scenario
def phone_to_phone_answered(r: Run) -> None:
    """alice (1001) calls 1002; bob answers after 1 s; talk 2 s; alice hangs up."""
    r.phone_uas("bob", duration_ms=1000)
    r.settle()
    r.phone_uac("alice", "1002", duration_ms=2000)
    r.rec.wait_state("PJSIP/bob", "Ringing")
    r.rec.snapshot("ringing")
    r.rec.wait_up(2)
    r.rec.snapshot("answered")


@scenario
def trunk_to_phone_answered(r: Run) -> None:
    """Carrier calls DID 0201112222 from 0207946000; alice answers; carrier hangs up."""
    r.phone_uas("alice", duration_ms=1000)
    r.settle()
    r.carrier_uac("0201112222", "0207946000", "Dentist", duration_ms=2000)
    r.rec.wait_state("PJSIP/alice", "Ringing")
    r.rec.snapshot("ringing")
    r.rec.wait_up(2)
    r.rec.snapshot("answered")


@scenario
def phone_to_trunk_answered(r: Run) -> None:
    """alice dials 0207946000 out through trunk1; the carrier answers; alice hangs up."""
    r.carrier_uas(duration_ms=1000)
    r.settle()
    r.phone_uac("alice", "0207946000", duration_ms=2000)
    r.rec.wait_state("PJSIP/trunk1", "Ringing")
    r.rec.snapshot("ringing")
    r.rec.wait_up(2)
    r.rec.snapshot("answered")


@scenario
def trunk_to_phone_cancelled(r: Run) -> None:
    """Carrier calls 0202224444 (carol); carol rings, never answers; carrier CANCELs after 2 s."""
    r.phone_uas("carol", "uas_ring.xml")
    r.settle()
    r.carrier_uac("0202224444", "0201239876", "Unknown Caller", "uac_cancel.xml", duration_ms=2000)
    r.rec.wait_state("PJSIP/carol", "Ringing")
    r.rec.snapshot("ringing")


@scenario
def busy(r: Run) -> None:
    """alice calls 1002; bob's phone answers 486 Busy Here; alice gets 486."""
    r.phone_uas("bob", "uas_busy.xml")
    r.settle()
    r.phone_uac("alice", "1002", "uac_fail.xml")
    r.rec.wait_event("Dial", lambda e: e.get("dialstatus") == "BUSY")
    r.rec.snapshot("busy")


@scenario
def unavailable(r: Run) -> None:
    """alice calls 1999 (endpoint 'offline', no contact): CHANUNAVAIL, alice gets 480."""
    r.phone_uac("alice", "1999", "uac_fail.xml")


@scenario
def ring_group_local(r: Run) -> None:
    """Carrier calls 0201113333 -> 600 -> Local/1001@ringgroup & Local/1002@ringgroup;
    bob answers."""
    r.phone_uas("alice", "uas_ring.xml")
    r.phone_uas("bob", duration_ms=1500)
    r.settle()
    r.carrier_uac("0201113333", "0207946000", "Dentist", duration_ms=2000)
    r.rec.wait_state("PJSIP/alice", "Ringing")
    r.rec.wait_state("PJSIP/bob", "Ringing")
    r.rec.snapshot("ringing")
    r.rec.wait_state("PJSIP/bob", "Up")
    r.rec.wait_for("alice's leg gone", lambda: not r.rec.channels_of("PJSIP/alice"))
    r.rec.snapshot("answered")


def _transfer_setup(r: Run, carol_talk_ms: int, alice_scenario: str, alice_ms: int) -> str:
    r.phone_uas("bob", duration_ms=500)
    r.phone_uas("carol", "uas_answer_bye.xml", duration_ms=carol_talk_ms)
    r.settle()
    r.phone_uac("alice", "1002", alice_scenario, duration_ms=alice_ms)
    r.rec.wait_up(2)
    alice = r.rec.wait_state("PJSIP/alice", "Up")
    r.rec.snapshot("answered")
    time.sleep(1.0)
    return alice["name"]


@scenario
def blind_transfer(r: Run) -> None:
    """alice calls bob; after 1 s alice blind-transfers bob to 2001 (AMI BlindTransfer);
    Asterisk hangs alice up; carol answers and hangs up after 2 s."""
    alice = _transfer_setup(r, 2000, "uac_wait_bye.xml", 0)
    ami = AMI()
    try:
        resp = ami.action(
            {"Action": "BlindTransfer", "Channel": alice, "Exten": "2001", "Context": "phones"}
        )
    finally:
        ami.close()
    if resp.get("Response") != "Success":
        raise CaptureError(f"BlindTransfer failed: {resp}")
    r.rec.wait_state("PJSIP/carol", "Up")
    r.rec.snapshot("transferred")


@scenario
def attended_transfer(r: Run) -> None:
    """alice calls bob; after 1 s alice starts an attended transfer to 2001 (AMI Atxfer,
    i.e. the atxfer feature code); carol answers; alice hangs up, which completes the
    transfer; bob and carol talk until carol hangs up."""
    alice = _transfer_setup(r, 4500, "uac.xml", 4000)
    ami = AMI()
    try:
        resp = ami.action(
            {"Action": "Atxfer", "Channel": alice, "Exten": "2001", "Context": "phones"}
        )
    finally:
        ami.close()
    if resp.get("Response") != "Success":
        raise CaptureError(f"Atxfer failed: {resp}")
    r.rec.wait_state("PJSIP/carol", "Up")
    r.rec.snapshot("consulting")
    r.rec.wait_for("alice hung up", lambda: not r.rec.channels_of("PJSIP/alice"), 10)
    time.sleep(0.3)
    r.rec.snapshot("transferred")


@scenario
def bridge_two_calls(r: Run) -> None:
    """Two separate calls joined by AMI Bridge: the carrier's call to alice (DID 0201112222)
    and bob's call to carol (2001). The trunk leg and carol's leg are bridged together, so
    carol's leg takes the older call's linkedid; Asterisk hangs up alice and bob (their
    bridges dissolve); carol hangs up 5 s after answering."""
    r.phone_uas("alice", duration_ms=300)
    r.phone_uas("carol", "uas_answer_bye.xml", duration_ms=5000)
    r.settle()
    r.carrier_uac("0201112222", "0207946000", "Dentist", "uac_wait_bye.xml")
    trunk = r.rec.wait_state("PJSIP/trunk1", "Up")
    r.phone_uac("bob", "2001", "uac_wait_bye.xml")
    carol = r.rec.wait_state("PJSIP/carol", "Up")
    r.rec.wait_up(4)
    r.rec.snapshot("answered")
    ami = AMI()
    try:
        resp = ami.action(
            {"Action": "Bridge", "Channel1": trunk["name"], "Channel2": carol["name"]}
        )
    finally:
        ami.close()
    if resp.get("Response") != "Success":
        raise CaptureError(f"Bridge failed: {resp}")
    time.sleep(0.5)
    r.rec.snapshot("bridged")
    r.rec.variable(carol["id"], "CHANNEL(linkedid)")


@scenario
def mixmonitor(r: Run) -> None:
    """bob calls 700: Answer, MixMonitor(${UNIQUEID}.wav), Dial alice; bob hangs up after 2 s."""
    r.phone_uas("alice", duration_ms=500)
    r.settle()
    r.phone_uac("bob", "700", duration_ms=2000)
    r.rec.wait_event("ChannelVarset", lambda e: e.get("variable") == "MIXMONITOR_FILENAME")
    r.rec.wait_up(2)
    r.rec.snapshot("answered")


@scenario
def restricted_presentation(r: Run) -> None:
    """alice dials *670207946000: Set(CALLERID(pres)=prohib), then out through trunk1.

    Asterisk publishes no ChannelCallerId for a presentation-only change (the event fires
    only when the caller number or name changes), so the value is read through REST and
    recorded as "variable" lines."""
    r.carrier_uas(duration_ms=500)
    r.settle()
    r.phone_uac("alice", "*670207946000", duration_ms=2000)
    r.rec.wait_up(2)
    r.rec.snapshot("answered")
    _record_presentation(r)


@scenario
def restricted_presentation_inbound(r: Run) -> None:
    """Carrier calls DID 0201112222 with From anonymous, P-Asserted-Identity 0207946000
    and Privacy: id (trust_id_inbound): the trunk leg has the real number, presentation
    prohibited; alice answers."""
    r.phone_uas("alice", duration_ms=500)
    r.settle()
    r.carrier_uac("0201112222", "0207946000", "Dentist", "uac_private.xml", duration_ms=2000)
    r.rec.wait_up(2)
    r.rec.snapshot("answered")
    _record_presentation(r)


def _record_presentation(r: Run) -> None:
    with r.rec.cond:
        live = sorted(r.rec.live.values(), key=lambda c: c["id"])
    for chan in live:
        r.rec.variable(chan["id"], "CHANNEL(linkedid)")
        r.rec.variable(chan["id"], "CALLERID(pres)")
        r.rec.variable(chan["id"], "CONNECTEDLINE(pres)")


# --------------------------------------------------------------------------------------
def ensure_idle(rec: Recorder) -> None:
    live = rec.get("/channels")
    if not live:
        return
    print(f"  hanging up {len(live)} leftover channel(s)", file=sys.stderr)
    for chan in live:
        rec.http.delete(f"{ARI_BASE}/channels/{chan['id']}", timeout=5)
    deadline = time.monotonic() + 10
    while rec.get("/channels") and time.monotonic() < deadline:
        time.sleep(0.2)
    if rec.get("/channels"):
        raise CaptureError("Asterisk still has channels; cannot record a clean scenario")


def capture(name: str, outdir: Path, keep_logs: bool = False) -> Path:
    fn = SCENARIOS[name]
    logdir = Path(tempfile.mkdtemp(prefix=f"capture-{name}-"))
    rec = Recorder()
    sipp = Sipp(logdir)
    ensure_idle(rec)
    rec.start()
    ok = False
    try:
        fn(Run(rec, sipp))
        codes = sipp.wait(30)
        rec.wait_all_destroyed(20)
        time.sleep(0.7)  # trailing bridge events may follow ChannelDestroyed
        final = rec.snapshot("after_hangup")
        if final:
            raise CaptureError(f"channels left after hangup: {[c['name'] for c in final]}")
        bad = {k: v for k, v in codes.items() if v != 0}
        if bad:
            raise CaptureError(f"sipp failed: {bad}\n{sipp.report()}")
        ok = True
    except Exception:
        print(sipp.report(), file=sys.stderr)
        print(f"  sipp logs kept in {logdir}", file=sys.stderr)
        keep_logs = True
        raise
    finally:
        sipp.stop()
        rec.stop()
        if ok:
            outdir.mkdir(parents=True, exist_ok=True)
            rec.write(outdir / f"{name}.jsonl")
        elif rec.records:
            rec.write(logdir / f"{name}.jsonl")
            print(f"  partial recording: {logdir / f'{name}.jsonl'}", file=sys.stderr)
        if not keep_logs:
            shutil.rmtree(logdir, ignore_errors=True)
    return outdir / f"{name}.jsonl"


def summarize(path: Path) -> str:
    counts: dict[str, int] = {}
    for line in path.read_text().splitlines():
        r = json.loads(line)
        key = r["data"]["type"] if r["type"] == "event" else r["type"]
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1]))


def check(path: Path) -> list[str]:
    """Problems of a recording file ([] when it is well formed and complete)."""
    problems: list[str] = []
    try:
        recs = [json.loads(line) for line in path.read_text().splitlines()]
    except (OSError, ValueError) as exc:
        return [f"unreadable: {exc}"]
    if not recs or recs[0].get("type") != "info":
        problems.append("first line is not an info record")
    if not recs or recs[-1].get("type") != "channels" or recs[-1].get("data") != []:
        problems.append("last line is not an empty channels snapshot")
    created: set[str] = set()
    destroyed: set[str] = set()
    for r in recs:
        if r.get("type") not in ("info", "event", "channels", "variable"):
            problems.append(f"unknown record type {r.get('type')!r}")
        if r.get("type") != "event":
            continue
        e = r["data"]
        chan = e.get("channel") if isinstance(e.get("channel"), dict) else None
        if chan and "CHANNEL(linkedid)" not in (chan.get("channelvars") or {}):
            problems.append(f"{e['type']} of {chan['name']} has no linkedid channelvar")
        if e.get("type") == "ChannelCreated":
            created.add(chan["id"])
        elif e.get("type") == "ChannelDestroyed":
            destroyed.add(chan["id"])
    if created - destroyed:
        problems.append(f"channels never destroyed: {sorted(created - destroyed)}")
    return problems


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("scenarios", nargs="*", help="scenario names, or 'all'")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--keep-logs", action="store_true", help="keep the sipp logs")
    p.add_argument(
        "--check",
        action="store_true",
        help="validate recording files given as arguments instead of recording",
    )
    args = p.parse_args(argv)
    if args.check:
        bad = 0
        for name in args.scenarios:
            problems = check(Path(name))
            print(f"{name}: {'ok' if not problems else '; '.join(problems)}")
            bad += bool(problems)
        return 1 if bad else 0
    if args.list or not args.scenarios:
        for name, fn in SCENARIOS.items():
            print(f"{name:26} {(fn.__doc__ or '').split(chr(10))[0]}")
        return 0 if args.list else 2
    names = list(SCENARIOS) if args.scenarios == ["all"] else args.scenarios
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        p.error(f"unknown scenario(s): {', '.join(unknown)}")
    if shutil.which("sipp") is None:
        p.error("sipp not found (apt-get install sip-tester, or scripts/asterisk-sandbox build)")
    failed = []
    for name in names:
        print(f"{name}: recording ...", file=sys.stderr)
        try:
            path = capture(name, args.out, args.keep_logs)
        except Exception as exc:
            print(f"{name}: FAILED: {exc}", file=sys.stderr)
            failed.append(name)
            continue
        print(f"{name}: {path.stat().st_size} bytes; {summarize(path)}", file=sys.stderr)
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
