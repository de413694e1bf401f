"""`/api/json/stream/ticket/` (SPEC §13): one-use tickets, valid 30 s, that open one live stream
instead of credentials in its URL; shared by every process through the database, and the
stream re-checked as the person the ticket was issued to."""

from __future__ import annotations

import hashlib
import threading
import time

import pytest
import webtest
from sqlalchemy import func, select, update

from pbxcontrol import config as config_mod
from pbxcontrol import provisioning, runtime
from pbxcontrol.auth import tickets
from pbxcontrol.db.models import StreamTicket
from pbxcontrol.streams import hub
from tests.conftest import LIST, build_provisioned, write_config
from tests.plugins.active_calls.conftest import CALLS
from tests.plugins.active_calls.stream_support import Client, serving, write_legs

TICKET = "/api/json/stream/ticket/"
LOGIN = "/api/json/user/login/"
LOGOUT = "/api/json/user/logout/"


@pytest.fixture
def site(database, databases, tmp_path, request):
    """A provisioned runtime with live legs, served on loopback: (runtime, address, app,
    config path)."""
    extra = getattr(request, "param", "")
    with databases.fresh(database, tmp_path) as url:
        config = write_config(tmp_path, db=url)
        config.write_text(config.read_text().replace("[http]\n", f"[http]\n{extra}\n", 1))
        rt = build_provisioned(config)
        write_legs(rt, 1, upsert=[r for r in CALLS if r["machine"] == 1])
        with serving(rt) as address:
            yield rt, address, webtest.TestApp(rt.app), config
        rt.close()


def ticket(app, who: str = "acme", **credentials: str) -> dict:
    params = credentials or {"auth_username": who, "auth_password": f"{who}-pass"}
    body = app.get(TICKET, params).json
    assert body["responses"][0]["code"] == "200", body
    return body["data"]


def token(app, who: str = "acme", **extra: str) -> str:
    params = {"auth_username": who, "auth_password": f"{who}-pass", "token": "1", **extra}
    return app.get(LOGIN, params).json["data"]["auth_token"]


def opened(address, query: str) -> Client:
    client = Client(address, query)
    assert client.header("Content-Type") == "text/event-stream", (client.head, client.buffer)
    client.read_until(lambda c: c.events)
    return client


def refused(address, query: str) -> dict:
    client = Client(address, query)
    assert client.header("Content-Type").startswith("application/json"), client.head
    return client.envelope()


def ends(client: Client, within: float) -> float:
    """Seconds until the server ends the stream (at most `within`)."""
    begun = time.monotonic()
    with pytest.raises(EOFError):
        client.read_until(lambda c: False, timeout=within)
    return time.monotonic() - begun


def test_a_ticket_is_a_random_secret_valid_for_30_seconds(site):
    rt, _, app, _ = site
    before = time.time()
    got = ticket(app)
    assert set(got) == {"ticket", "expires"} and len(got["ticket"]) == 43
    assert int(before) + 29 <= got["expires"] <= time.time() + 30
    assert ticket(app)["ticket"] != got["ticket"]
    with rt.engine.connect() as conn:  # stored as a digest only
        rows = conn.execute(select(StreamTicket.digest, StreamTicket.username)).all()
    assert (hashlib.sha256(got["ticket"].encode()).hexdigest(), "acme") in rows
    assert all(got["ticket"] not in row.digest for row in rows)


def test_a_ticket_opens_one_stream_once(site):
    _, address, app, _ = site
    value = ticket(app)["ticket"]
    stream = opened(address, f"ticket={value}")
    listed = app.get(LIST, {"auth_username": "acme", "auth_password": "acme-pass"}).json["data"]
    assert sorted(r["uniqueid"] for r in stream.rows.values()) == sorted(
        r["uniqueid"] for r in listed
    )
    again = refused(address, f"ticket={value}")
    assert again == {"responses": [{"code": "401", "key": "", "message": tickets.USED}]}
    stream.close()


def test_an_expired_ticket_is_401(site):
    rt, address, app, _ = site
    value = ticket(app)["ticket"]
    with rt.engine.begin() as conn:
        conn.execute(update(StreamTicket).values(expires=time.time() - 0.01))
    assert refused(address, f"ticket={value}")["responses"][0]["code"] == "401"


@pytest.mark.parametrize("value", ["", "x", "A" * 43, "A" * 44, "%C3%A4" * 43, "../" * 15])
def test_a_ticket_that_was_never_issued_is_401(site, value):
    _, address, _, _ = site
    assert refused(address, f"ticket={value}")["responses"][0]["code"] == "401"


def test_a_ticket_with_credentials_is_400_and_a_ticket_is_no_json_credential(site):
    _, address, app, _ = site
    value = ticket(app)["ticket"]
    both = refused(address, f"ticket={value};auth_username=acme;auth_password=acme-pass")
    assert (both["responses"][0]["code"], both["responses"][0]["key"]) == ("400", "ticket")
    assert app.get(LIST, {"ticket": ticket(app)["ticket"]}).json["responses"][0]["code"] == "401"


def test_racing_requests_use_a_ticket_once(site):
    rt, _, app, _ = site
    value = ticket(app)["ticket"]
    won: list[object] = []
    barrier = threading.Barrier(8)

    def use() -> None:
        barrier.wait()
        with rt.engine.begin() as conn:
            won.append(tickets.consume(conn, value))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert len(won) == 8 and len([w for w in won if w is not None]) == 1, won


def test_a_ticket_from_one_process_opens_a_stream_on_another(site):
    rt, _, app, config = site
    other = runtime.build(config_mod.load(str(config)), record=False)
    try:
        with serving(other) as elsewhere:
            value = ticket(app)["ticket"]
            stream = opened(elsewhere, f"ticket={value}")
            assert stream.events[0][1] == "snapshot"
            stream.close()
            assert refused(elsewhere, f"ticket={value}")["responses"][0]["code"] == "401"
    finally:
        other.close()


def test_expired_tickets_are_pruned_when_the_next_is_issued(site):
    rt, _, app, _ = site
    ticket(app)
    with rt.engine.begin() as conn:
        conn.execute(update(StreamTicket).values(expires=time.time() - 1))
    ticket(app)
    with rt.engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(StreamTicket)).scalar() == 1


def test_a_read_tokens_ticket_opens_the_stream(site):
    _, address, app, _ = site
    read = token(app, scope="read")
    stream = opened(address, f"ticket={ticket(app, auth_token=read)['ticket']}")
    stream.close()


def disable(rt, who: str, customer: int, role: str) -> None:
    doc = {"people": [{"username": who, "customer": customer, "role": role, "enabled": False}]}
    with rt.sessions.begin() as session:
        provisioning.apply(session, doc)


def test_a_ticket_stream_is_rechecked_as_its_person_and_only_its(site, monkeypatch):
    """No password is kept: the re-check reads the person the ticket was issued to (disabled:
    the stream ends), each stream's person on its own."""
    rt, address, app, _ = site
    monkeypatch.setattr(hub, "RECHECK", 0.5)
    beta = opened(address, f"ticket={ticket(app, 'beta')['ticket']}")
    acme = opened(address, f"ticket={ticket(app, 'acme')['ticket']}")
    disable(rt, "beta", 4, "user")
    assert ends(beta, 5) < 5
    write_legs(rt, 1, update=[dict(CALLS[0], status="Ringing")])
    acme.read_until(lambda c: any(e[1] == "upsert" for e in c.events), timeout=5)
    acme.close()


def test_a_ticket_stream_ends_when_its_token_is_logged_out(site, monkeypatch):
    rt, address, app, _ = site
    monkeypatch.setattr(hub, "RECHECK", 0.5)
    value = token(app)
    stream = opened(address, f"ticket={ticket(app, auth_token=value)['ticket']}")
    assert app.get(LOGOUT, {"auth_token": value}).json["responses"][0]["code"] == "204"
    assert ends(stream, 5) < 5


@pytest.mark.parametrize("site", ["token_lifetime = 2"], indirect=True)
def test_a_ticket_stream_ends_when_its_token_expires(site):
    _, address, app, _ = site
    stream = opened(address, f"ticket={ticket(app, auth_token=token(app))['ticket']}")
    assert ends(stream, 10) < 4
