"""A real `pbxcontrol serve` process and the API == Asterisk comparisons of the e2e tier."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import requests

from sandbox.sippctl import PARTY_CHANNEL, Ari, hang_up_parties

REPO = Path(__file__).resolve().parents[2]
PROVISION = REPO / "sandbox" / "provision.json"
USERS = {
    "admin": "admin-pass",
    "reseller": "reseller-pass",
    "acme": "acme-pass",
    "beta": "beta-pass",
}
_LISTENING = re.compile(r"HTTP API listening on http://[^:]+:(\d+)/")
OURS = PARTY_CHANNEL


class PbxServer:
    """`python -m pbxcontrol --config FILE serve` on `db_url` (default: a SQLite file in
    `workdir`), HTTP on a free port. `command` "record" or "api" runs one half; `machines`
    ({id: (ari_url, app)}) replaces the one `[asterisk:1]` of `ari_url`/`app`; `extra` is
    more INI text (e.g. a `[recorder]` section)."""

    def __init__(
        self,
        workdir: Path,
        ari_url: str,
        app: str,
        db_url: str | None = None,
        *,
        command: str = "serve",
        machines: dict[int, tuple[str, str]] | None = None,
        extra: str = "",
    ) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / "pbxcontrol.ini"
        self.config.write_text(
            textwrap.dedent(f"""\
            [database]
            url = {db_url or f"sqlite:///{workdir / 'pbx.db'}"}
            [http]
            host = 127.0.0.1
            port = 0
            [logging]
            level = DEBUG
            [plugins]
            enabled = active_calls
            """)
            + "".join(
                textwrap.dedent(f"""\
                [asterisk:{mid}]
                ari_url = {url}
                username = pbxcontrol
                password = pbxcontrol-secret
                app = {name}
                ping_interval = 2
                ping_timeout = 4
                """)
                for mid, (url, name) in (
                    {1: (ari_url, app)} if machines is None else machines
                ).items()
            )
            + textwrap.dedent(extra)
        )
        self.config.chmod(0o600)
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.command = command
        self.log = workdir / f"{command}.log"
        self.http = requests.Session()
        self.starts = 0
        self.app = app

    def cli(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO,
        )
        assert done.returncode == 0, f"pbxcontrol {' '.join(args)}: {done.stderr}"
        return done.stdout

    def provision(self) -> None:
        self.cli("initdb")
        self.cli("provision", str(PROVISION))

    def start(self, timeout: float = 30.0, ready: str = "events websocket connected") -> None:
        """Start and wait until the log shows `ready` (not for "api") and, unless it is a
        "record", the API answers."""
        self.starts += 1
        offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), self.command],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while True:
            text = self.log.read_text(errors="replace")[offset:]
            match = _LISTENING.search(text)
            if self.command == "api" or ready in text:
                if self.command == "record":
                    return
                if match:
                    self.port = int(match.group(1))
                    if self.list("admin", customer="system") is not None:
                        return
            if self.proc.poll() is not None:
                raise AssertionError(
                    f"pbxcontrol {self.command} exited with {self.proc.returncode}:\n" + self.tail()
                )
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"pbxcontrol {self.command} not ready in {timeout} s:\n" + self.tail()
                )
            time.sleep(0.1)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self) -> int | None:
        """SIGTERM; returns the exit status (None if it had to be killed)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return proc.returncode if proc else 0
        proc.send_signal(signal.SIGTERM)
        try:
            return proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            return None

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()
        self.proc = None

    # -- the API --
    def call_api(self, user: str, **params: Any) -> dict[str, Any]:
        query = ";".join(
            [
                f"auth_username={user}",
                f"auth_password={USERS[user]}",
                *(f"{k}={v}" for k, v in params.items()),
            ]
        )
        url = f"http://127.0.0.1:{self.port}/api/json/calls/active/list/?{query}"
        resp = self.http.get(url, timeout=5)
        resp.raise_for_status()
        return resp.json()

    def list(self, user: str, **params: Any) -> list[dict[str, Any]] | None:
        """The rows `user` sees (None when the API does not answer or answers an error)."""
        try:
            body = self.call_api(user, **params)
        except (requests.RequestException, ValueError):
            return None
        if body["responses"][0]["code"] != "200":
            raise AssertionError(f"API error for {user} {params}: {body['responses']}")
        return body["data"]


def system_view(pbx: PbxServer) -> dict[str, dict[str, Any]]:
    rows = pbx.list("admin", customer="system")
    return {} if rows is None else {r["uniqueid"]: r for r in rows}


def ari_view(ari: Ari) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for c in ari.channels()}


def same(api: dict[str, dict[str, Any]], ast: dict[str, dict[str, Any]]) -> bool:
    """Same legs, each in the state Asterisk reports."""
    return api.keys() == ast.keys() and all(api[i]["status"] == ast[i]["state"] for i in ast)


def converge(pbx: PbxServer, ari: Ari, timeout: float) -> float:
    """Seconds until the system view equals GET /ari/channels (legs and states)."""
    start = time.monotonic()
    while True:
        ast = ari_view(ari)
        api = system_view(pbx)
        if same(api, ast) and same(api, ari_view(ari)):
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(
                f"API != Asterisk after {timeout} s\n"
                f"  only in API:      {sorted((i, api[i]['channel']) for i in api.keys() - ast)}\n"
                f"  only in Asterisk: {sorted((i, ast[i]['name']) for i in ast.keys() - api)}\n"
                f"  state differs:    "
                f"{[(i, api[i]['status'], ast[i]['state']) for i in ast.keys() & api if api[i]['status'] != ast[i]['state']]}\n"  # noqa: E501
                f"--- pbxcontrol serve log ---\n{pbx.tail(60)}"
            )
        time.sleep(0.05)


def wait_ari(
    ari: Ari, what: str, pred: Callable[[list[dict[str, Any]]], Any], timeout: float = 15.0
) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        chans = ari.channels()
        result = pred(chans)
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out waiting for {what}; Asterisk has "
                f"{[(c['name'], c['state']) for c in chans]}"
            )
        time.sleep(0.05)


def of(chans: list[dict[str, Any]], endpoint: str, state: str | None = None) -> list[dict]:
    return [
        c
        for c in chans
        if c["name"].startswith(endpoint + "-") and (state is None or c["state"] == state)
    ]


def hang_up_ours(ari: Ari, timeout: float = 10.0) -> None:
    hang_up_parties(ari, timeout)


def snapshot(pbx: PbxServer, ari: Ari, timeout: float = 1.0):
    """(API rows, Asterisk channels) at a moment they agree, retrying up to `timeout`."""
    start = time.monotonic()
    while True:
        ast = ari_view(ari)
        api = system_view(pbx)
        if same(api, ast):
            return api, ast
        if time.monotonic() - start > timeout:
            converge(pbx, ari, 0)  # raises with the difference
        time.sleep(0.05)


def leg_key(name: str) -> str:
    """`PJSIP/alice-0000001e` -> `PJSIP/alice`; `Local/600@phones-00000003;2` -> `Local/600@phones;2`."""  # noqa: E501
    base, _, rest = name.rpartition("-")
    return base + (";" + rest.split(";")[1] if ";" in rest else "")


def check_legs(pbx: PbxServer, ari: Ari, unique: bool = True) -> dict[str, dict[str, Any]]:
    """The API lists exactly Asterisk's legs, each with Asterisk's id, name, state, linkedid
    and SIP Call-ID; returns our parties' rows by leg key (`PJSIP/alice`, `Local/…;1`)."""
    api, ast = snapshot(pbx, ari)
    rows: dict[str, dict[str, Any]] = {}
    for cid, chan in ast.items():
        if not OURS.match(chan["name"]):
            continue
        row = api[cid]
        assert row["channel"] == chan["name"]
        assert row["machine"] == 1
        assert row["status"] == chan["state"]
        assert row["answered"] > 0 if chan["state"] == "Up" else row["answered"] == 0, row
        assert row["callid"] == ari.variable(cid, "CHANNEL(linkedid)"), row
        if chan["name"].startswith("PJSIP/"):
            assert row["sip_callid"] == chan["protocol_id"] != "", row
        else:
            assert row["sip_callid"] == ""
        created = datetime.fromisoformat(chan["creationtime"]).timestamp()
        assert abs(row["start"] - created) <= 1, row
        key = leg_key(chan["name"])
        if unique:
            assert key not in rows, f"two legs of {key}: use one call per scenario"
        rows[key if key not in rows else cid] = row
    return rows


def visible(pbx: PbxServer, user: str, ids, **params: Any) -> set[str]:
    rows = pbx.list(user, **params) or []
    return {r["uniqueid"] for r in rows} & set(ids)


def hang_up_and_check(pbx: PbxServer, ari: Ari, channel_id: str, ids) -> float:
    """Hang `channel_id` up through ARI; once Asterisk has none of `ids`, the API must drop
    them within a second. Returns that delay."""
    ids = set(ids)
    ari.hangup(channel_id)
    wait_ari(ari, "the call's legs to end", lambda ch: not ids & {c["id"] for c in ch}, 15)
    start = time.monotonic()
    while ids & set(system_view(pbx)):
        delay = time.monotonic() - start
        assert delay <= 1.0, f"legs still listed {delay:.2f} s after Asterisk ended them"
        time.sleep(0.02)
    return time.monotonic() - start
