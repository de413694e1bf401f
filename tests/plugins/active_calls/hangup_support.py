"""calls/hangup test service: the TREE with live calls, machine 1 a local HTTP ARI
(tests/fakeari_http.py, so the real AriClient sends the DELETEs), machine 2 a closed port,
machine 3 not configured."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import webtest
from sqlalchemy import select

from pbxcontrol.plugin import tables
from pbxcontrol.runtime import Runtime
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
class Service:
    rt: Runtime
    app: webtest.TestApp
    ari: FakeAriHttp  # machine 1

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
        [asterisk:1]
        ari_url = {ari.url}
        username = pbxcontrol
        password = ari-secret
        [asterisk:2]
        ari_url = http://127.0.0.1:{closed_port()}/ari
        username = pbxcontrol
        password = ari-secret
        [plugin:active_calls]
        hangups_per_minute = {per_minute}
        """
    rt = build_provisioned(write_config(tmp_path, body, db=db_url))
    if extra_doc:
        from pbxcontrol import provisioning

        with rt.sessions.begin() as session:
            provisioning.apply(session, extra_doc)
    insert_legs(rt, CALLS + EXTRA)
    return Service(rt, webtest.TestApp(rt.app, extra_environ={"REMOTE_ADDR": ADDRESS}), ari)


def serve(tmp_path: Path, db_url: str) -> Iterator[Service]:
    """The body of each test module's `svc` fixture: the service, closed afterwards."""
    service = start(tmp_path, db_url)
    yield service
    service.rt.close()
    service.ari.close()


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
