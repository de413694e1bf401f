"""calls/hangup (SPEC §9): Asterisk out of reach, the audit trail, the rate limit, and the
migration that gives the built-in roles `actions`."""

from __future__ import annotations

import json
import logging
import time

import pytest
from sqlalchemy import select, update

from pbxcontrol.db import models
from pbxcontrol.plugin import tables
from tests.plugins.active_calls.hangup_support import (
    ADDRESS,
    NOT_FOUND,
    accepted,
    codes,
    hang_up,
    serve,
    start,
)

call_actions = tables.call_actions


@pytest.fixture
def svc(tmp_path, db_url):
    yield from serve(tmp_path, db_url)


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


def test_machine_no_recording_process_holds_is_503_at_once_and_says_so(svc):
    # SPEC §11.2: the API reaches Asterisk only through the machine's lease holder.
    started = time.monotonic()
    envelope = hang_up(svc.app, uniqueid="310.1")
    assert time.monotonic() - started < 1
    assert envelope["responses"] == [
        {
            "code": "503",
            "key": "",
            "message": "machine 3: no recording process holds it; nothing was done",
        }
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


def test_actions_per_minute_limits_each_person(tmp_path, db_url):
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
        service.close()


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
