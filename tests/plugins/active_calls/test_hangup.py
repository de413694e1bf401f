"""calls/hangup (SPEC §9): what is hung up, the parameters, and who may."""

from __future__ import annotations

import json
import threading

import pytest
from sqlalchemy import event

from tests.plugins.active_calls.hangup_support import (
    HANGUP,
    NOT_FOUND,
    accepted,
    codes,
    hang_up,
    query,
    serve,
    start,
)


@pytest.fixture
def svc(tmp_path, db_url):
    yield from serve(tmp_path, db_url)


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


@pytest.mark.parametrize("who", ["beta", "gamma", "wall"])
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
        service.close()


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
    invisible = svc.app.get(query(who, params)).body
    missing = svc.app.get(query(who, {**params, key: "999.9"})).body
    assert invisible == missing
    assert json.loads(invisible) == {
        "responses": [{"code": "404", "key": key, "message": NOT_FOUND}]
    }
    assert svc.ari.deleted == []


def test_invisible_and_nonexistent_run_the_same_statements(svc):
    """Timing cannot tell them apart: the database is asked the same things."""
    seen: list[str] = []
    request_thread = threading.get_ident()  # webtest runs the request here; the holders'
    # intent workers share the engine on their own threads (their polls are not the request's)

    def record(conn, cursor, statement, parameters, context, executemany):
        if threading.get_ident() == request_thread:
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
