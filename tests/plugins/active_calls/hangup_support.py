"""calls/hangup test service: the TREE with live calls, machine 1 a local HTTP ARI
(tests/fakeari_http.py, so the real AriClient sends the DELETEs), machine 2 a closed port,
machine 3 not configured. The API process has no [asterisk:N] section: machines 1 and 2 are
each held by an intent worker (pbxcontrol/recorder/intents.py) holding the machine's lease, as
a `record` process's would (SPEC §11.2); machine 3 has no holder."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import webtest
from sqlalchemy import select

from pbxcontrol.ari.client import AriClient
from pbxcontrol.plugin import tables
from pbxcontrol.recorder.intents import IntentWorker
from pbxcontrol.recorder.lease import Lease
from pbxcontrol.recorder.leg import Recorded
from pbxcontrol.runtime import CONTROL_TIMEOUT, Runtime
from tests.conftest import build_provisioned, write_config
from tests.fakeari_http import FakeAriHttp
from tests.plugins.active_calls.conftest import CALLS, insert_legs, leg

call_actions = tables.call_actions

HANGUP = "/api/json/calls/hangup/"
NOT_FOUND = "Call does not exist, or you do not have permission to view it"
ADDRESS = "127.0.0.9"
# Besides CALLS: one uniqueid live on machines 1 and 2 (Acme's), and a leg on machine 3,
# which no [asterisk:3] section configures.
EXTRA = [
    leg("300.1", "300.1", 300, scustomer=3, dcustomer=3),
    leg("300.1", "300.1", 300, scustomer=3, dcustomer=3, machine=2),
    leg("310.1", "310.1", 310, scustomer=3, dcustomer=3, machine=3),
]


@dataclass
class Holder:
    """One machine's lease holder, reduced to its intent worker (no websocket)."""

    worker: IntentWorker
    thread: threading.Thread
    stopping: threading.Event

    def stop(self) -> None:
        self.stopping.set()
        self.worker.wake.set()
        self.thread.join(5)


def hold(
    rt: Runtime,
    machine: int,
    ari_url: str,
    ari: object = None,
    note: Callable[[Recorded], None] | None = None,
) -> Holder:
    """Take `machine`'s lease and carry out its intents on a thread, woken by the runtime's
    doorbell like a recorder under `serve`: over ARI at `ari_url`, or through `ari`; `note`
    gets what the recording executors tell the writer (recorder/leg.py Recorded)."""
    lease = Lease(machine, f"test-holder-{machine}", takeover=5.0)
    with rt.sessions.begin() as session:
        lease.ensure_row(session, f"machine {machine}")
    with rt.sessions.begin() as session:
        assert lease.try_acquire(session)
    holding, stopping = threading.Event(), threading.Event()
    holding.set()
    if ari is None:
        ari = AriClient(ari_url, "pbxcontrol", "ari-secret", "pbxcontrol", timeout=CONTROL_TIMEOUT)
    worker = IntentWorker(
        *(machine, ari, rt.sessions, lease, holding, stopping, rt.bell.event(machine)),
        note=note,
    )
    thread = threading.Thread(target=worker.run, daemon=True)
    thread.start()
    return Holder(worker, thread, stopping)


@dataclass
class Service:
    rt: Runtime
    app: webtest.TestApp
    ari: FakeAriHttp  # machine 1
    holders: list[Holder] = field(default_factory=list)

    def close(self) -> None:
        for holder in self.holders:
            holder.stop()
        self.rt.close()
        self.ari.close()

    def audit(self) -> list[dict]:
        with self.rt.engine.connect() as conn:
            rows = conn.execute(select(call_actions).order_by(call_actions.c.id)).mappings()
            return [dict(r) for r in rows]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(tmp_path: Path, db_url: str, per_minute: int = 1000, extra_doc=None) -> Service:
    ari = FakeAriHttp({r["uniqueid"] for r in CALLS + EXTRA if r["machine"] == 1})
    body = f"""\
        [plugin:active_calls]
        actions_per_minute = {per_minute}
        """
    rt = build_provisioned(write_config(tmp_path, body, db=db_url))
    if extra_doc:
        from pbxcontrol import provisioning

        with rt.sessions.begin() as session:
            provisioning.apply(session, extra_doc)
    insert_legs(rt, CALLS + EXTRA)
    holders = [hold(rt, 1, ari.url), hold(rt, 2, f"http://127.0.0.1:{closed_port()}/ari")]
    app = webtest.TestApp(rt.app, extra_environ={"REMOTE_ADDR": ADDRESS})
    return Service(rt, app, ari, holders)


def serve(tmp_path: Path, db_url: str) -> Iterator[Service]:
    """The body of each test module's `svc` fixture: the service, closed afterwards."""
    service = start(tmp_path, db_url)
    yield service
    service.close()


def hang_up(app, who: str = "acme", method: str = "GET", **params: str) -> dict:
    pairs = [("auth_username", who), ("auth_password", f"{who}-pass"), *params.items()]
    if method == "POST":
        resp = app.post(HANGUP, pairs)
    else:
        resp = app.get(HANGUP + "?" + ";".join(f"{k}={quote(v, safe='')}" for k, v in pairs))
    assert resp.status_int == 200 and resp.content_type == "application/json"
    return resp.json


def codes(envelope: dict) -> list[tuple[str, str]]:
    assert "data" not in envelope, envelope
    return [(r["code"], r["key"]) for r in envelope["responses"]]


def accepted(envelope: dict) -> bool:
    return codes(envelope) == [("204", "")]


def query(who: str, params: dict[str, str]) -> str:
    pairs = [("auth_username", who), ("auth_password", f"{who}-pass"), *params.items()]
    return HANGUP + "?" + ";".join(f"{k}={quote(v, safe='')}" for k, v in pairs)
