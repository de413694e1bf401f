"""The soak's processes and probes: `pbxcontrol record` and `pbxcontrol api` on one database,
started without waiting (a start without the database must be watched, not awaited), and what
the soak reads of them: the API's legs against Asterisk's channels, /health, /metrics, memory."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from sandbox.sippctl import Ari
from tests.e2e.support import REPO, PbxServer

#: "answering 503 on": waiting for the database (SPEC §12), its port already answers.
LISTENING = re.compile(r"HTTP API (?:listening|answering 503) on http://[^:]+:(\d+)/")


def launch(pbx: PbxServer) -> int:
    """Start `pbx` (its command) and return where its log starts, without waiting."""
    pbx.starts += 1
    pbx.port = 0  # until this start logs its own
    offset = pbx.log.stat().st_size if pbx.log.exists() else 0
    with open(pbx.log, "ab") as log:
        pbx.proc = subprocess.Popen(
            [sys.executable, "-m", "pbxcontrol", "--config", str(pbx.config), pbx.command],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            cwd=REPO,
        )
    return offset


def up(pbx: PbxServer, offset: int) -> bool:
    """Whether `pbx`, started at log `offset`, works: the recorder is connected to ARI, the
    API lists (code 200). Notes the API's port as soon as it is logged."""
    text = pbx.log.read_text(errors="replace")[offset:]
    if pbx.command == "record":
        return "events websocket connected" in text
    ports = LISTENING.findall(text)
    if ports:
        pbx.port = int(ports[-1])
    return bool(pbx.port) and answer(pbx)[0] == "200"


def answer(pbx: PbxServer, **params: Any) -> tuple[str, list[dict[str, Any]] | None]:
    """(the envelope's code or "down", the system view's rows) of one list request."""
    try:
        body = pbx.call_api("admin", customer="system", **params)
    except (requests.RequestException, ValueError):
        return "down", None
    code = body["responses"][0]["code"]
    return code, body.get("data") if code == "200" else None


def wait_up(pbx: PbxServer, offset: int, timeout: float) -> tuple[float | None, int | None]:
    """(seconds until `up`, None if not in `timeout`; the exit status if it exited)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if up(pbx, offset):
            return round(time.monotonic() - started, 2), None
        if pbx.proc is not None and pbx.proc.poll() is not None:
            return None, pbx.proc.returncode
        time.sleep(0.1)
    return None, None


@dataclass(frozen=True)
class Check:
    """One comparison of the API's system view with Asterisk's channels (read before and
    after it): `missing` channels Asterisk had at both reads that the API lacks; `ghosts` legs
    the API lists as recorded that Asterisk had at neither; `flagged` legs listed with
    `recorded` = 0 (a machine nobody records: shown as such, not ghosts)."""

    missing: int
    ghosts: int
    flagged: int

    @property
    def exact(self) -> bool:
        return self.missing == 0 and self.ghosts == 0 and self.flagged == 0


def compare(pbx: PbxServer, ari: Ari) -> Check | None:
    """None when the API does not answer a list."""
    before = {c["id"] for c in ari.channels()}
    _, rows = answer(pbx)
    after = {c["id"] for c in ari.channels()}
    if rows is None:
        return None
    flagged = {r["uniqueid"] for r in rows if r.get("recorded", 1) == 0}
    api = {r["uniqueid"] for r in rows} - flagged
    return Check(len((before & after) - api - flagged), len(api - (before | after)), len(flagged))


def converge(pbx: PbxServer, ari: Ari, timeout: float = 60.0) -> float | None:
    """Seconds until a comparison is exact (None: not within `timeout`)."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        check = compare(pbx, ari)
        if check is not None and check.exact:
            return round(time.monotonic() - started, 2)
        time.sleep(0.2)
    return None


def health(pbx: PbxServer) -> tuple[int, dict[str, Any] | None]:
    """(HTTP status, body) of GET /health; (0, None) when nothing answers."""
    try:
        resp = pbx.http.get(f"http://127.0.0.1:{pbx.port}/health", timeout=5)
        return resp.status_code, resp.json()
    except (requests.RequestException, ValueError):
        return 0, None


def open_streams(pbx: PbxServer) -> int | None:
    """pbxcontrol_stream_subscribers from GET /metrics."""
    try:
        text = pbx.http.get(f"http://127.0.0.1:{pbx.port}/metrics", timeout=5).text
    except requests.RequestException:
        return None
    match = re.search(r"^pbxcontrol_stream_subscribers(?:\{[^}]*\})? ([\d.e+]+)$", text, re.M)
    return int(float(match.group(1))) if match else None


def memory_mb(pbx: PbxServer) -> list[float | None]:
    """[VmRSS, RssAnon, RssFile] of the process in MB. RssAnon is the heap; RssFile includes
    the database pages SQLite reads through mmap (they belong to the page cache)."""
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
