"""Call control through the recording process (SPEC §11.2) against the sandbox Asterisk: a
`pbxcontrol api` with no `[asterisk:N]` section (no ARI credentials, no route to Asterisk)
hangs up a real SIP call through the `pbxcontrol record` process holding the machine's lease,
on SQLite (the holder polls) and on PostgreSQL (the API's NOTIFY wakes it)."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy import create_engine, text

from sandbox.sippctl import ARI_URL
from tests.e2e.conftest import APP, show_log_if_failed
from tests.e2e.support import REPO, USERS, PbxServer, check_legs, of, system_view, wait_ari
from tests.e2e.test_hangup import call_alice_to_bob, ended_through_the_api, hang_up

pytestmark = pytest.mark.e2e


@dataclass
class Split:
    api: PbxServer  # lists, answers, writes intents; no ARI settings
    record: PbxServer  # holds the lease, carries the intents out
    url: str


@pytest.fixture(scope="module")
def dialplan(asterisk):
    """The sandbox with etc/asterisk/extensions_pbxcontrol.conf of this tree installed: another
    tree may have reinstalled its own config since (the e2e lock is held: nothing else runs)."""
    done = subprocess.run(
        [str(REPO / "scripts" / "asterisk-sandbox"), "reload"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return asterisk


@pytest.fixture(params=["sqlite", "postgresql"])
def split(request, dialplan, databases, tmp_path) -> Iterator[Split]:
    with databases.fresh(request.param, tmp_path, empty=True) as url:
        app = f"{APP}-split-{request.param}"
        record = PbxServer(tmp_path / "record", ARI_URL, app, url, command="record")
        # The sandbox's dialling context for redirects (SPEC §11.7's context).
        extra = "[plugin:active_calls]\ncontext = phones\nactions_per_minute = 0\n"
        api = PbxServer(tmp_path / "api", "", "", url, command="api", machines={}, extra=extra)
        assert "[asterisk" not in api.config.read_text()
        record.provision()
        try:
            record.start(ready="recording (epoch")
            api.start()
            yield Split(api, record, url)
        finally:
            for server in (api, record):
                show_log_if_failed(request, server)
            statuses = [server.stop() for server in (record, api)]
        assert statuses == [0, 0], record.tail() + api.tail()


def test_an_api_without_ari_settings_hangs_up_through_the_recording_process(split, asterisk, sipp):
    ari, pbx = asterisk, split.api
    rows, alice, bob = call_alice_to_bob(ari, pbx, sipp)
    ids = {r["uniqueid"] for r in rows.values()}
    started = time.monotonic()
    resp = hang_up(pbx, "acme", callid=rows["PJSIP/alice"]["callid"])
    took = time.monotonic() - started
    ended_through_the_api(pbx, ari, resp, ids, [alice, bob])
    assert not of(ari.channels(), "PJSIP/alice") and not ids & set(system_view(pbx))
    engine = create_engine(split.url)
    try:
        with engine.connect() as conn:
            audit = conn.execute(text("SELECT id, code, legs FROM call_actions")).one()
            intent = conn.execute(
                text("SELECT action_id, machine, state, code, epoch FROM call_intents")
            ).one()
    finally:
        engine.dispose()
    assert audit.code == 204
    # The first DELETE ends the call: Asterisk may end the other leg before its own DELETE.
    results = [leg[2] for leg in json.loads(audit.legs)]
    assert len(results) == len(ids) and "hung up" in results
    assert set(results) <= {"hung up", "already ended"}, results
    assert (intent.action_id, intent.machine, intent.state, intent.code) == (
        audit.id,
        1,
        "done",
        204,
    )
    assert intent.epoch >= 1
    print(f"hangup through the recording process: API answered in {took * 1000:.0f} ms")


def test_a_call_nobody_may_see_is_404_and_nothing_is_asked_of_the_holder(split, asterisk, sipp):
    ari, pbx = asterisk, split.api
    rows, _alice, _bob = call_alice_to_bob(ari, pbx, sipp)
    resp = hang_up(pbx, "beta", callid=rows["PJSIP/alice"]["callid"])
    assert resp.json()["responses"][0]["code"] == "404"
    time.sleep(0.5)
    wait_ari(ari, "the call still up", lambda ch: len(of(ch, "PJSIP/alice", "Up")) == 1, 2)
    assert check_legs(pbx, ari)


def control(pbx: PbxServer, function: str, user: str, **params: str) -> dict:
    query = {"auth_username": user, "auth_password": USERS[user], **params}
    url = f"http://127.0.0.1:{pbx.port}/api/json/calls/{function}/"
    resp = pbx.http.get(url, params=query, timeout=10)
    resp.raise_for_status()
    return resp.json()


def test_an_inbound_call_redirected_to_another_phone(split, dialplan, sipp):
    """The carrier calls Acme's DID, alice answers; the calling side (the trunk's leg) is
    redirected to 1002: bob's sipp receives the INVITE, alice's leg is released and gone from
    GET /channels, and the list shows the trunk's leg with cnumber 1002."""
    ari, pbx = dialplan, split.api
    alice = sipp.phone_answers("alice", ring_ms=200)
    bob = sipp.phone_answers("bob", ring_ms=200)
    carrier = sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    wait_ari(
        ari,
        "alice talking",
        lambda ch: of(ch, "PJSIP/alice", "Up") and of(ch, "PJSIP/trunk1", "Up"),
    )
    rows = check_legs(pbx, ari)
    trunk, alices = rows["PJSIP/trunk1"], rows["PJSIP/alice"]
    assert trunk["cnumber"] == "0201112222"
    # Beta may not see it: the same 404 as a call that does not exist; nothing moves.
    for who, uid in (("beta", alices["uniqueid"]), ("acme", "1.999999")):
        refused = control(pbx, "redirect", who, uniqueid=uid, cnumber="1002")
        assert refused["responses"][0]["code"] == "404", refused
    started = time.monotonic()
    answer = control(pbx, "redirect", "acme", uniqueid=alices["uniqueid"], cnumber="1002")
    took = time.monotonic() - started
    assert answer["responses"][0]["code"] == "204", answer
    wait_ari(ari, "alice's leg gone", lambda ch: not of(ch, "PJSIP/alice"), 5)
    wait_ari(ari, "bob talking to the carrier", lambda ch: of(ch, "PJSIP/bob", "Up"), 10)
    assert "INVITE sip:" in bob.messages.read_text(errors="replace")
    assert alice.proc.wait(15) == 0 and "BYE sip:" in alice.messages.read_text(errors="replace")
    assert trunk["uniqueid"] in {c["id"] for c in ari.channels()}
    deadline = time.monotonic() + 2
    while True:
        listed = system_view(pbx)
        row = listed.get(trunk["uniqueid"])
        if row is not None and row["cnumber"] == "1002" and alices["uniqueid"] not in listed:
            break
        assert time.monotonic() < deadline, (row, sorted(listed))
        time.sleep(0.05)
    assert row["ctype"] == ""
    assert not any(r["channel"].startswith("Local/redirect@") for r in listed.values())
    assert carrier.running()
    print(f"redirect through the recording process: API answered in {took * 1000:.0f} ms")


def test_the_called_side_of_an_inbound_call_redirected_to_another_phone(split, dialplan, sipp):
    """`channel=2` (SPEC §11.3): the carrier calls Acme's DID, alice answers; named by the
    carrier's leg, the called side (alice's leg) is redirected to 1002: bob's sipp receives the
    INVITE and answers, alice's leg stays up talking to bob, the carrier's leg left behind is
    released (its sipp gets the BYE) and gone from GET /channels, and the list shows alice's
    leg with cnumber 1002."""
    ari, pbx = dialplan, split.api
    sipp.phone_answers("alice", ring_ms=200)
    bob = sipp.phone_answers("bob", ring_ms=200)
    carrier = sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    wait_ari(
        ari,
        "alice talking",
        lambda ch: of(ch, "PJSIP/alice", "Up") and of(ch, "PJSIP/trunk1", "Up"),
    )
    rows = check_legs(pbx, ari)
    trunk, alices = rows["PJSIP/trunk1"], rows["PJSIP/alice"]
    answer = control(
        pbx, "redirect", "acme", uniqueid=trunk["uniqueid"], channel="2", cnumber="1002"
    )
    assert answer["responses"][0]["code"] == "204", answer
    wait_ari(ari, "the carrier's leg released", lambda ch: not of(ch, "PJSIP/trunk1"), 5)
    wait_ari(ari, "bob talking to alice", lambda ch: of(ch, "PJSIP/bob", "Up"), 10)
    assert "INVITE sip:" in bob.messages.read_text(errors="replace")
    assert carrier.proc.wait(15) == 0
    assert "BYE sip:" in carrier.messages.read_text(errors="replace")
    assert alices["uniqueid"] in {c["id"] for c in ari.channels()}
    deadline = time.monotonic() + 2
    while True:
        listed = system_view(pbx)
        row = listed.get(alices["uniqueid"])
        if row is not None and row["cnumber"] == "1002" and trunk["uniqueid"] not in listed:
            break
        assert time.monotonic() < deadline, (row, sorted(listed))
        time.sleep(0.05)
    assert row["ctype"] == ""
    assert not any(r["channel"].startswith("Local/redirect@") for r in listed.values())
