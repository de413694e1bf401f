"""/api/stream/calls/active/list/ over real HTTP: the list's parameters and errors, a snapshot
equal to the list, upsert/remove from changes written through the recorder's store (journal
included), resume, count, keepalive, and streams that must end."""

from __future__ import annotations

import json
import time
from urllib.parse import quote

import pytest
import webtest

from pbxcontrol import provisioning
from pbxcontrol.db import journal
from pbxcontrol.streams import hub
from tests.conftest import LIST, build_provisioned, write_config
from tests.plugins.active_calls.conftest import ALICE, BY_ID, CALLS, leg
from tests.plugins.active_calls.stream_support import Client, query, serving, write_legs


@pytest.fixture
def site(database, databases, tmp_path, request):
    """A provisioned runtime with CALLS live, served on loopback: (runtime, address, list app)."""
    extra = getattr(request, "param", "")
    with databases.fresh(database, tmp_path) as url:
        config = write_config(tmp_path, db=url)
        config.write_text(config.read_text().replace("[http]\n", f"[http]\n{extra}\n", 1))
        rt = build_provisioned(config)
        for machine in (1, 2):
            write_legs(rt, machine, upsert=[r for r in CALLS if r["machine"] == machine])
        with serving(rt) as address:
            yield rt, address, webtest.TestApp(rt.app)
        rt.close()


def listed(app, q: str) -> dict:
    return json.loads(app.get(LIST + "?" + q).body)


def rows_of(envelope) -> list[dict]:
    return sorted(envelope["data"], key=lambda r: (r["start"], r["uniqueid"], r["machine"]))


def started(address, q: str, **kw) -> Client:
    client = Client(address, q, **kw)
    assert client.header("Content-Type") == "text/event-stream", client.head
    client.read_until(lambda c: c.events)
    return client


BAD = [
    {"customer": "99"},
    {"customer": "x", "sort": "nope", "direction": "up"},
    {"names": "2", "smatch": "like"},
    {"phone": "PJSIP/carol"},
    {"snumber": "1" * 300},
]


@pytest.mark.parametrize("params", BAD)
def test_invalid_parameters_are_the_lists_400_envelope(site, params):
    _, address, app = site
    q = query("acme", **params)
    client = Client(address, q)
    assert client.status_line.endswith("200 OK")
    assert client.header("Content-Type") == "application/json; charset=utf-8"
    assert client.envelope() == listed(app, q)
    assert client.envelope()["responses"][0]["code"] == "400"


@pytest.mark.parametrize(
    ("who", "params", "code"),
    [
        ("acme", {"auth_password": "wrong"}, "401"),
        ("", {}, "401"),
        ("gone", {}, "401"),
        ("panel", {}, "402"),
        ("acme", {"customer": "system"}, "402"),
    ],
)
def test_auth_and_privilege_errors_are_envelopes(site, who, params, code):
    _, address, _ = site
    q = query(who, **params) if "auth_password" not in params else query("", **params)
    if "auth_password" in params:
        q = "auth_username=acme;" + q
    assert Client(address, q).envelope()["responses"][0]["code"] == code


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"names": "1"},
        {"customer": "recursive", "sort": "snumber", "descending": "1"},
        {"recursive": "1", "direction": "in_out", "names": "1"},
        {"phone": "PJSIP/alice"},
    ],
)
def test_snapshot_equals_the_list(site, params):
    _, address, app = site
    for who in ("acme", "reseller", "admin"):
        q = query(who, **params)
        client = started(address, q)
        ident, kind, data = client.events[0]
        assert kind == "snapshot" and isinstance(ident, int)
        assert data["data"] == listed(app, q)["data"]  # the list's order too
        client.close()


def test_changes_arrive_as_upsert_and_remove_and_keep_the_list(site):
    rt, address, app = site
    q = query("acme", names="1")
    client = started(address, q)
    new = leg("900.1", "900.1", 900, **ALICE)
    write_legs(rt, upsert=[new])
    client.read_until(lambda c: (1, "900.1") in c.rows)
    assert client.events[-1][1] == "upsert"
    assert client.listed() == rows_of(listed(app, q))
    write_legs(rt, update=[dict(new, scustomer=7, dcustomer=7)])  # moved out of acme's scope
    client.read_until(lambda c: (1, "900.1") not in c.rows)
    assert client.events[-1][1:] == ("remove", {"uniqueid": "900.1", "machine": 1})
    write_legs(rt, gone=[CALLS[0]])  # ends
    client.read_until(lambda c: (1, "100.1") not in c.rows)
    assert client.listed() == rows_of(listed(app, q))
    ids = [e[0] for e in client.events]
    assert ids == sorted(set(ids))  # strictly increasing


def test_foreign_changes_send_nothing(site):
    rt, address, _ = site
    client = started(address, query("beta"))
    write_legs(rt, upsert=[leg("901.1", "901.1", 901, scustomer=7, dcustomer=7)])
    write_legs(rt, update=[dict(leg("901.1", "901.1", 901), scustomer=7, status="Ring")])
    before = len(client.events)
    with pytest.raises(AssertionError, match="did not reach"):
        client.read_until(lambda c: len(c.events) > before, timeout=1.0)


def test_resume_sends_only_the_missed_changes(site):
    rt, address, app = site
    q = query("acme")
    client = started(address, q)
    last = client.events[-1][0]
    client.close()
    write_legs(rt, upsert=[leg("902.1", "902.1", 902, **ALICE)])
    write_legs(rt, gone=[CALLS[1]])
    again = Client(address, q, headers={"Last-Event-ID": str(last)})
    again.rows = dict(client.rows)
    again.read_until(lambda c: c.listed() == rows_of(listed(app, q)))
    assert "snapshot" not in [e[1] for e in again.events]
    assert {e[1] for e in again.events} == {"upsert", "remove"}
    by_param = Client(address, q + f";last_event_id={last}")
    by_param.read_until(lambda c: len(c.events) >= 2)
    assert "snapshot" not in [e[1] for e in by_param.events]


def test_resume_says_nothing_of_legs_outside_the_scope(site):
    rt, address, _ = site
    q = query("beta")
    client = started(address, q)
    last = client.events[-1][0]
    client.close()
    foreign = leg("905.1", "905.1", 905, scustomer=7, dcustomer=7)
    write_legs(rt, upsert=[foreign])
    write_legs(rt, gone=[foreign])  # came and went while beta was away
    write_legs(rt, gone=[BY_ID["150.1"]])  # Gamma's call ends
    write_legs(rt, upsert=[leg("906.1", "906.1", 906, scustomer=4, dcustomer=4)])
    again = Client(address, q, headers={"Last-Event-ID": str(last)})
    again.read_until(lambda c: (1, "906.1") in c.rows)
    assert [(kind, data["uniqueid"]) for _, kind, data in again.events] == [("upsert", "906.1")]


def test_resume_after_the_journal_was_pruned_is_a_fresh_snapshot(site):
    rt, address, app = site
    q = query("acme")
    client = started(address, q)
    last = client.events[-1][0]
    write_legs(rt, upsert=[leg("903.1", "903.1", 903, **ALICE)])
    with rt.engine.begin() as conn:
        journal.prune(conn, time.time() + 1, 10_000)
    again = started(address, q, headers={"Last-Event-ID": str(last)})
    assert again.events[0][1] == "snapshot"
    assert again.listed() == rows_of(listed(app, q))


def test_provisioning_that_changes_names_sends_a_fresh_snapshot(site):
    rt, address, app = site
    q = query("acme", names="1")
    client = started(address, q)
    doc = {"directory": [{"customer": 3, "number": "0207946000", "name": "New Dentist"}]}
    with rt.sessions.begin() as session:
        provisioning.apply(session, doc)
    client.read_until(lambda c: len(c.events) >= 2)
    assert client.events[-1][1] == "snapshot"
    assert client.events[-1][2]["data"] == listed(app, q)["data"]


def test_count_events_carry_the_count(site):
    rt, address, app = site
    q = query("acme", count="1")
    client = started(address, q)
    assert client.events[0][2] == listed(app, q)["data"]
    write_legs(rt, upsert=[leg("904.1", "904.1", 904, **ALICE)])
    client.read_until(lambda c: len(c.events) >= 2)
    assert client.events[-1][2] == listed(app, q)["data"] != client.events[0][2]


def test_keepalive_comments(site, monkeypatch):
    _, address, _ = site
    monkeypatch.setattr(hub, "KEEPALIVE", 0.5)
    client = started(address, query("acme"))
    client.read_until(lambda c: ": keepalive" in c.comments, timeout=4)


@pytest.mark.parametrize("site", ["streams_per_person = 2"], indirect=True)
def test_streams_per_person_over_the_limit_is_429(site):
    _, address, _ = site
    first, second = started(address, query("acme")), started(address, query("acme"))
    third = Client(address, query("acme"))
    assert third.envelope()["responses"][0]["code"] == "429"
    assert started(address, query("beta")).events  # another person is not limited by acme
    first.close()
    time.sleep(0.5)  # the hub sees the close and frees the slot
    assert started(address, query("acme")).events
    second.close()


@pytest.mark.parametrize("site", ["token_lifetime = 2"], indirect=True)
def test_a_token_stream_ends_when_the_token_expires(site):
    _, address, app = site
    login = app.get("/api/json/user/login/?auth_username=acme;auth_password=acme-pass;token=1")
    token = login.json["data"]["auth_token"]
    client = started(address, f"auth_token={token}")
    begun = time.monotonic()
    with pytest.raises(EOFError):
        client.read_until(lambda c: False, timeout=10)
    assert time.monotonic() - begun < 4


def test_a_disabled_persons_stream_ends(site, monkeypatch):
    rt, address, _ = site
    monkeypatch.setattr(hub, "RECHECK", 0.5)
    client = started(address, query("beta"))
    doc = {"people": [{"username": "beta", "customer": 4, "role": "user", "enabled": False}]}
    with rt.sessions.begin() as session:
        provisioning.apply(session, doc)
    with pytest.raises(EOFError):
        client.read_until(lambda c: False, timeout=5)


@pytest.mark.parametrize("resume", ["\u00b2", "-1", "abc", "9" * 30, "1e3"])
def test_a_last_event_id_that_is_not_an_id_starts_with_a_snapshot(site, resume):
    _, address, app = site
    q = query("acme")
    by_header = started(address, q, headers={"Last-Event-ID": resume})
    assert by_header.events[0][1] == "snapshot"
    by_param = started(address, q + ";last_event_id=" + quote(resume))
    assert by_param.events[0][1] == "snapshot"


@pytest.mark.parametrize("site", ["streams_per_person = 2"], indirect=True)
def test_clients_that_leave_at_once_free_their_slots(site):
    _, address, _ = site
    for _ in range(10):
        Client(address, query("acme")).close()  # headers read, then gone
    time.sleep(0.5)
    first, second = started(address, query("acme")), started(address, query("acme"))
    first.close()
    second.close()


@pytest.mark.parametrize("site", ["streams_per_person = 1"], indirect=True)
def test_a_stream_whose_snapshot_fails_is_closed_and_frees_its_slot(site, monkeypatch):
    """SPEC §12: the database fails while a stream joins the hub: that stream is closed (its
    client reconnects) and its person's slot is free again, not leaked."""
    from pbxcontrol.plugins.active_calls import stream as stream_module
    from sqlalchemy.exc import OperationalError

    _, address, _ = site
    real = stream_module.ListView.snapshot
    failures = [OperationalError("SELECT", {}, Exception("server closed the connection"))]

    def snapshot(self, conn, replace):
        if failures:
            raise failures.pop()
        return real(self, conn, replace)

    monkeypatch.setattr(stream_module.ListView, "snapshot", snapshot)
    with pytest.raises(EOFError):  # closed without a snapshot (perhaps before its head)
        Client(address, query("acme", names="1")).read_until(lambda c: c.events)
    assert not failures
    client = started(address, query("acme", names="1"))  # the one slot is free again
    assert client.events[0][1] == "snapshot"
    client.close()


@pytest.mark.parametrize("site", ["stream_buffer = 65536"], indirect=True)
def test_a_client_that_stops_reading_is_dropped_past_stream_buffer(site, caplog):
    """SPEC §12: once more than `[http] stream_buffer` bytes of its events wait in the process
    (beyond what its socket took), the stream ends: memory stays bounded."""
    import logging
    import socket

    rt, address, _ = site
    caplog.set_level(logging.INFO, "pbxcontrol.http")
    stalled = socket.socket()
    stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # reads nothing, keeps little
    stalled.connect(address)
    stalled.sendall(f"GET /api/stream/calls/active/list/?{query('acme')} HTTP/1.1\r\n\r\n".encode())
    reader = started(address, query("acme"))  # another client of the same view, reading
    rows = [leg(f"9{i}.1", f"9{i}.1", 900 + i, scustomer=3, snumber="1" * 100) for i in range(40)]
    dropped = False
    for step in range(400):  # each round ~40 upserts of ~1 KB for both clients
        changed = [dict(row, status=f"S{step}") for row in rows]
        write_legs(rt, 1, upsert=changed if step == 0 else [], update=changed if step else [])
        status = f"S{step}"
        reader.read_until(lambda c, s=status: c.rows.get((1, "90.1"), {}).get("status") == s)
        if "does not read" in caplog.text:
            dropped = True
            break
    assert dropped, "the stalled client was never dropped"
    (line,) = [r.getMessage() for r in caplog.records if "does not read" in r.getMessage()]
    waiting = int(line.split(": ")[1].split()[0])
    assert 65536 < waiting < 65536 + 200_000  # the bound, plus at most one round's events
    assert reader.rows  # the reading client goes on
    stalled.close()
    reader.close()
