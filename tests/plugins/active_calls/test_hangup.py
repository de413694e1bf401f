"""calls/hangup (SPEC §9): parameters, privilege, visibility, ARI, audit and rate limit.

Asterisk is a small HTTP server on 127.0.0.1 (tests/fakeari_http.py), so the real AriClient
sends the DELETEs."""

from __future__ import annotations

import json
import logging
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import pytest
import webtest
from sqlalchemy import event, select, update

from pbxcontrol.db import models
from pbxcontrol.plugin import call_actions
from pbxcontrol.runtime import Runtime
from tests.conftest import build_provisioned, write_config
from tests.fakeari_http import FakeAriHttp
from tests.plugins.active_calls.conftest import CALLS, insert_legs, leg

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


@pytest.fixture
def svc(tmp_path, db_url):
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


# -- what is hung up -------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_callid_hangs_up_every_leg_of_the_call_and_answers_204(svc, method):
    assert accepted(hang_up(svc.app, method=method, callid="100.1"))
    assert sorted(svc.ari.deleted) == ["100.1", "100.2"]
    assert set(svc.ari.auth) == {"pbxcontrol:ari-secret"}


def test_uniqueid_hangs_up_that_leg_only(svc):
    assert accepted(hang_up(svc.app, uniqueid="110.2"))
    assert svc.ari.deleted == ["110.2"]


def test_machine_picks_one_of_two_legs_with_the_same_uniqueid(svc):
    assert accepted(hang_up(svc.app, uniqueid="300.1", machine="1"))
    assert svc.ari.deleted == ["300.1"]  # machine 2 (a closed port) was not asked


def test_without_machine_a_uniqueid_on_two_machines_asks_both(svc):
    envelope = hang_up(svc.app, uniqueid="300.1")
    assert codes(envelope) == [("503", "")]  # machine 2 does not answer
    assert svc.ari.deleted == ["300.1"]  # machine 1 was still asked


def test_leg_that_ended_meanwhile_is_not_an_error(svc):
    svc.ari.live.discard("100.2")  # Asterisk ended it; the recorder has not noticed yet
    assert accepted(hang_up(svc.app, callid="100.1"))
    legs = json.loads(svc.audit()[-1]["legs"])
    assert sorted(legs) == [[1, "100.1", "hung up"], [1, "100.2", "already ended"]]


def test_reseller_hangs_up_a_call_of_a_customer_under_it(svc):
    assert accepted(hang_up(svc.app, "reseller", callid="130.1"))
    assert svc.ari.deleted == ["130.1"]


def test_customer_hangs_up_a_call_of_its_sub_customer(svc):
    assert accepted(hang_up(svc.app, "acme", callid="180.1"))


# -- parameters ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "params,expected",
    [
        ({}, [("400", "callid"), ("400", "uniqueid")]),
        ({"callid": "", "uniqueid": ""}, [("400", "callid"), ("400", "uniqueid")]),
        ({"callid": "100.1", "uniqueid": "100.1"}, [("400", "callid"), ("400", "uniqueid")]),
        ({"callid": "100.1", "machine": "x"}, [("400", "machine")]),
        ({"uniqueid": "100.1", "machine": "-1"}, [("400", "machine")]),
        ({"uniqueid": "100.1", "machine": "1" * 10}, [("400", "machine")]),
        ({"callid": "1" * 256}, [("400", "callid")]),
        ({"uniqueid": "a\x00b"}, [("400", "uniqueid")]),
        ({"machine": "1"}, [("400", "callid"), ("400", "uniqueid")]),
    ],
)
def test_invalid_parameters_are_400_by_key_and_hang_nothing_up(svc, params, expected):
    assert codes(hang_up(svc.app, **params)) == expected
    assert svc.ari.deleted == []
    assert svc.audit()[-1]["code"] == 400


# -- who may --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["beta", "gamma", "panel", "wall"])
def test_role_without_actions_is_402(svc, who):
    assert codes(hang_up(svc.app, who, callid="130.1")) == [("402", "")]
    assert svc.ari.deleted == []


def test_wrong_password_is_401(svc):
    resp = svc.app.get(HANGUP + "?auth_username=acme;auth_password=nope;callid=100.1")
    assert codes(resp.json) == [("401", "")]
    assert svc.ari.deleted == []


@pytest.mark.parametrize("who", ["admin", "reseller", "acme"])
def test_builtin_system_owner_reseller_and_administrator_have_actions(svc, who):
    assert accepted(hang_up(svc.app, who, callid="100.1" if who != "admin" else "200.1"))


def test_provisioning_grants_actions_to_a_custom_role(tmp_path, db_url):
    doc = {
        "roles": [{"name": "noc", "privileges": ["actions"]}],
        "people": [{"username": "noc", "password": "noc-pass", "customer": 2, "role": "noc"}],
    }
    service = start(tmp_path, db_url, extra_doc=doc)
    try:
        assert accepted(hang_up(service.app, "noc", callid="130.1"))
        assert service.ari.deleted == ["130.1"]
    finally:
        service.rt.close()
        service.ari.close()


@pytest.mark.parametrize(
    "who,params",
    [
        ("acme", {"callid": "130.1"}),  # Beta's call: a sibling customer
        ("acme", {"uniqueid": "190.1"}),  # Reseller A's own leg: the parent
        ("acme", {"uniqueid": "140.1", "machine": "2"}),
        ("reseller", {"callid": "150.1"}),  # Gamma, under the other reseller
        ("acme", {"uniqueid": "100.1", "machine": "2"}),  # exists, but on machine 1
    ],
)
def test_invisible_call_gets_exactly_the_nonexistent_call_answer(svc, who, params):
    key = "callid" if "callid" in params else "uniqueid"
    invisible = svc.app.get(_query(who, params)).body
    missing = svc.app.get(_query(who, {**params, key: "999.9"})).body
    assert invisible == missing
    assert json.loads(invisible) == {
        "responses": [{"code": "404", "key": key, "message": NOT_FOUND}]
    }
    assert svc.ari.deleted == []


def test_invisible_and_nonexistent_run_the_same_statements(svc):
    """Timing cannot tell them apart: the database is asked the same things."""
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(statement)

    event.listen(svc.rt.engine, "before_cursor_execute", record)
    try:
        runs = []
        for callid in ("130.1", "999.9"):
            seen.clear()
            hang_up(svc.app, "acme", callid=callid)
            runs.append(list(seen))
    finally:
        event.remove(svc.rt.engine, "before_cursor_execute", record)
    assert runs[0] == runs[1] and runs[0]


def _query(who: str, params: dict[str, str]) -> str:
    pairs = [("auth_username", who), ("auth_password", f"{who}-pass"), *params.items()]
    return HANGUP + "?" + ";".join(f"{k}={quote(v, safe='')}" for k, v in pairs)


# -- Asterisk out of reach -------------------------------------------------------------------


def test_unreachable_asterisk_is_503_within_a_few_seconds(svc):
    started = time.monotonic()
    envelope = hang_up(svc.app, "reseller", uniqueid="140.1")  # machine 2: a closed port
    assert time.monotonic() - started < 3
    assert codes(envelope) == [("503", "")]
    assert "machine 2" in envelope["responses"][0]["message"]
    assert svc.audit()[-1]["code"] == 503


def test_hung_asterisk_is_503_not_a_hang(svc):
    svc.ari.delay = 10
    started = time.monotonic()
    assert codes(hang_up(svc.app, uniqueid="110.2")) == [("503", "")]
    assert time.monotonic() - started < 5


def test_asterisk_refusing_the_hangup_is_503(svc):
    svc.ari.status = 500
    assert codes(hang_up(svc.app, uniqueid="110.2")) == [("503", "")]


def test_machine_without_ari_settings_on_this_host_is_503_and_says_so(svc):
    envelope = hang_up(svc.app, uniqueid="310.1")
    assert envelope["responses"] == [
        {"code": "503", "key": "", "message": "machine 3 is not reachable from this API host"}
    ]


# -- audit and rate limit --------------------------------------------------------------------


def test_every_action_is_audited_and_logged_once(svc, caplog):
    caplog.set_level(logging.INFO, logger="pbxcontrol.plugins.active_calls")
    before = time.time()
    assert accepted(hang_up(svc.app, "acme", callid="100.1"))
    assert codes(hang_up(svc.app, "acme", callid="130.1")) == [("404", "callid")]
    rows = svc.audit()
    assert [(r["username"], r["customer_id"], r["address"], r["action"]) for r in rows] == [
        ("acme", 3, ADDRESS, "hangup")
    ] * 2
    first, second = rows
    assert before <= first["at"] <= time.time()
    assert (first["callid"], first["uniqueid"], first["machine"]) == ("100.1", "", 0)
    assert sorted(json.loads(first["legs"])) == [[1, "100.1", "hung up"], [1, "100.2", "hung up"]]
    assert (first["code"], second["code"]) == (204, 404)
    assert second["message"] == NOT_FOUND and json.loads(second["legs"]) == []
    lines = [r.getMessage() for r in caplog.records if r.name.endswith("active_calls")]
    assert len(lines) == 2
    assert "'acme'" in lines[0] and "callid='100.1'" in lines[0] and "-> 204" in lines[0]
    assert ADDRESS in lines[0] and "acme-pass" not in " ".join(lines)


def test_hangups_per_minute_limits_each_person(tmp_path, db_url):
    service = start(tmp_path, db_url, per_minute=2)
    try:
        app = service.app
        assert accepted(hang_up(app, "acme", callid="100.1"))
        assert codes(hang_up(app, "acme", callid="999.9")) == [("404", "callid")]
        limited = hang_up(app, "acme", callid="110.1")
        assert codes(limited) == [("429", "")]
        assert "2 a minute" in limited["responses"][0]["message"]
        assert service.ari.deleted == ["100.1", "100.2"]
        assert [r["code"] for r in service.audit()] == [204, 404, 429]  # refusals audited too
        assert accepted(hang_up(app, "reseller", callid="130.1"))  # per person
        with service.rt.engine.begin() as conn:  # a minute passes
            conn.execute(update(call_actions).values(at=call_actions.c.at - 61))
        assert accepted(hang_up(app, "acme", callid="110.1"))
    finally:
        service.rt.close()
        service.ari.close()


def test_upgrade_gives_existing_builtin_roles_actions(tmp_path):
    from pbxcontrol.db import migrate
    from pbxcontrol.db.engine import make_engine

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    migrate.upgrade(engine, "0006")
    privilege = models.RolePrivilege
    actions = select(privilege.role).where(privilege.privilege == "actions")
    with engine.connect() as conn:
        assert conn.execute(actions).all() == []
    migrate.upgrade(engine)
    migrate.upgrade(engine)  # idempotent
    with engine.connect() as conn:
        roles = sorted(conn.execute(actions).scalars())
    engine.dispose()
    assert roles == ["administrator", "reseller", "system owner"]
