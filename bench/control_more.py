"""The control functions besides calls/hangup (SPEC §11.3-§11.6) through the recording process,
for `bench/control.py`'s rounds: calls/redirect, calls/make, recording/recordings/start and
stop, calls/monitor. Each request is sent from a thread while this one watches Asterisk for
its effect, so *answer* (request → the API's answer) and *effect* (request → the change
visible in ARI) are timed independently, on the same clock:

- redirect: `GET /channels/{id}` shows the leg at the new extension;
- make: party 1's channel (`pbxc-<intent>-party1`) exists;
- recording start: `GET /recordings/live/{name}` answers 200 (the snoop `pbxc-<intent>-record`
  names the intent, hence the recording); stop: it answers 404;
- monitor: the supervisor's channel (`pbxc-<intent>-supervisor`) exists.

Acme's policy (its own provisioning document, `policy_document`) allows recording and barging
and dials in the `bench` context, so every leg the functions create answers and holds the line
without SIP; the supervisor's phone is the line 7001, `Local/7001@bench`. The functions act on
real legs only (never a Local channel): bob's phone, a sipp answering every call, originated
into `bench`.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import requests

from bench.common import ROOT
from bench.sandbox import ARI

ADMIN = {"auth_username": "admin", "auth_password": "admin-pass"}
SUPERVISOR_LINE = "7001"
MAKE = {"customer": "3", "wait": "1"}  # Acme: its context is `bench`
FUNCTIONS = ("redirect", "make", "record_start", "record_stop", "monitor")
_CREATED = re.compile(r"pbxc-([0-9]+)-(party1|record|supervisor)")


def policy_document(workdir: Path) -> Path:
    """The sandbox's provisioning with Acme recording, monitorable, dialling in `bench`."""
    doc = json.loads((ROOT / "sandbox" / "provision.json").read_text())
    for customer in doc["customers"]:
        if customer["id"] == 3:
            customer |= {"record": 1, "monitor": "barge", "context": "bench"}
    doc["lines"].append(
        {"endpoint": f"Local/{SUPERVISOR_LINE}@bench", "customer": 3,
         "number": SUPERVISOR_LINE, "name": "Bench supervisor"}
    )  # fmt: skip
    path = workdir / "provision-control.json"
    path.write_text(json.dumps(doc))
    return path


class Functions:
    """One timed request per function, on calls `call()` sets up (the hangup rounds' calls)
    or `phone_call()` does."""

    def __init__(self, api_port: int, ari: requests.Session, call: Callable[[], str]) -> None:
        self.ari, self.call = ari, call
        self.api = requests.Session()
        self.base = f"http://127.0.0.1:{api_port}/api/json"
        self.times: dict[str, list[float]] = {}
        self.failed = threading.Event()  # the request was refused
        self.seen: set[str] = set()  # ids of channels this bench created and watched for
        self.n = 300_000

    def round(self) -> None:
        """Each function once, its legs hung up after."""
        self.redirect()
        self.make()
        self.record()
        self.monitor()

    def phone_call(self) -> str:
        """Bob's phone (a sipp answering) up in `bench`, listed; its channel's id."""
        self.n += 1
        resp = self.ari.post(
            f"{ARI}/channels",
            params={"endpoint": "PJSIP/bob", "context": "bench", "extension": str(self.n)},
            timeout=10,
        )
        resp.raise_for_status()
        channel = resp.json()["id"]

        def up() -> bool:
            found = self.ari.get(f"{ARI}/channels/{channel}", timeout=10)
            return found.ok and found.json()["state"] == "Up" and self._listed_up(channel)

        self._until(up)
        return channel

    def _listed_up(self, channel: str) -> bool:
        """The API lists the leg as Up (the functions act on what the database says)."""
        rows = self._api("calls/active/list", recursive="1").get("data") or []
        return any(r["uniqueid"] == channel and r["status"] == "Up" for r in rows)

    def redirect(self) -> None:
        channel = self.phone_call()
        self.n += 1
        target = str(self.n)
        self._timed(
            "redirect",
            lambda: self._api("calls/redirect", uniqueid=channel, cnumber=target),
            lambda: self._at(channel, target),
        )
        self._hang_up(channel)

    def make(self) -> None:
        self.n += 2
        body = self._timed(
            "make",
            lambda: self._api("calls/make", snumber=str(self.n), cnumber=str(self.n + 1), **MAKE),
            lambda: self._created("party1"),
        )
        party1 = body["data"]["uniqueid"]
        self._hang_up(party1, party1 + "b")

    def record(self) -> None:
        channel = self.phone_call()
        found: dict[str, str] = {}

        def started() -> bool:
            if "name" not in found:
                snoop = self._created("record", wait=False)
                if snoop is None:
                    return False
                intent = snoop.split("-")[1]
                day = time.strftime("%Y/%m/%d", time.gmtime())
                found["name"] = f"3/{day}/{channel}-{intent}"
            return self._live(found["name"]) == 200

        self._timed("record_start", lambda: self._start(channel), lambda: self._until(started))
        self._timed(
            "record_stop",
            lambda: self._api("recording/recordings/stop", uniqueid=channel),
            lambda: self._until(lambda: self._live(found["name"]) == 404),
        )
        self._hang_up(channel)

    def _start(self, channel: str) -> dict[str, Any]:
        return self._api("recording/recordings/start", uniqueid=channel)

    def monitor(self) -> None:
        channel = self.phone_call()
        params = {"uniqueid": channel, "phone": SUPERVISOR_LINE, "mode": "listen"}
        body = self._timed(
            "monitor",
            lambda: self._api("calls/monitor", user=ADMIN, **params),
            lambda: self._created("supervisor"),
        )
        self._hang_up(body["data"]["uniqueid"], channel)

    # -- timing ---------------------------------------------------------------------------

    def _timed(self, name: str, request: Callable[[], Any], effect: Callable[[], Any]) -> Any:
        """`request` on a thread, `effect` (which returns once visible) on this one."""
        box: dict[str, Any] = {}

        def send() -> None:
            try:
                box["body"] = request()
            finally:
                box["ms"] = (time.perf_counter() - started) * 1000
                if box.get("body", {}).get("responses", [{}])[0].get("code") not in ("200", "204"):
                    self.failed.set()  # no effect to wait for

        self.failed.clear()
        started = time.perf_counter()
        sender = threading.Thread(target=send)
        sender.start()
        try:
            effect()
        except RuntimeError:
            sender.join(15)
            raise RuntimeError(f"{name}: {box.get('body')}") from None
        effect_ms = (time.perf_counter() - started) * 1000
        sender.join(15)
        body = box.get("body")
        if body is None or body["responses"][0]["code"] not in ("200", "204"):
            raise RuntimeError(f"{name}: {body and body['responses']}")
        self.times.setdefault(f"{name}.answer", []).append(box["ms"])
        self.times.setdefault(f"{name}.effect", []).append(effect_ms)
        return body

    def _api(self, function: str, user: dict[str, str] | None = None, **params: str) -> Any:
        args = {**(user or ADMIN), **params}
        return self.api.get(f"{self.base}/{function}/", params=args, timeout=15).json()

    def _until(self, done: Callable[[], bool], limit: float = 10.0) -> None:
        deadline = time.monotonic() + limit
        while not done():
            if self.failed.is_set() or time.monotonic() > deadline:
                raise RuntimeError(f"no effect within {limit:g} s")
            time.sleep(0.002)

    def _at(self, channel: str, extension: str) -> None:
        def moved() -> bool:
            resp = self.ari.get(f"{ARI}/channels/{channel}", timeout=10)
            return resp.ok and resp.json()["dialplan"]["exten"] == extension

        self._until(moved)

    def _created(self, role: str, wait: bool = True) -> Any:
        """The id of a channel of `role` this bench has not seen yet (waits for it)."""
        found: list[str] = []

        def appeared() -> bool:
            for ch in self.ari.get(f"{ARI}/channels", timeout=10).json():
                m = _CREATED.fullmatch(ch["id"])
                if m and m.group(2) == role and ch["id"] not in self.seen:
                    self.seen.add(ch["id"])
                    found.append(ch["id"])
                    return True
            return False

        if not wait:
            return found[0] if appeared() else None
        self._until(appeared)
        return found[0]

    def _live(self, name: str) -> int:
        return self.ari.get(f"{ARI}/recordings/live/{quote(name, safe='')}", timeout=10).status_code

    def _hang_up(self, *channels: str) -> None:
        for channel in channels:
            self.ari.delete(f"{ARI}/channels/{channel}", timeout=10)
