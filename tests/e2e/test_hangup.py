"""calls/hangup against the sandbox Asterisk: real SIP calls ended through the API (SPEC §9)."""

from __future__ import annotations

import time
from typing import Any

import pytest
import requests

from sandbox.sippctl import Party, SippPool
from tests.e2e.support import USERS, check_legs, of, system_view, wait_ari

pytestmark = pytest.mark.e2e


def hang_up(pbx, user: str, **params: str) -> requests.Response:
    query = {"auth_username": user, "auth_password": USERS[user], **params}
    url = f"http://127.0.0.1:{pbx.port}/api/json/calls/hangup/"
    resp = pbx.http.get(url, params=query, timeout=10)
    resp.raise_for_status()
    return resp


def call_alice_to_bob(ari, pbx, sipp: SippPool) -> tuple[dict[str, Any], Party, Party]:
    """alice calls bob (both Acme's), bob answers; both sipps then wait for Asterisk's BYE."""
    bob = sipp.phone_answers("bob", ring_ms=500)
    alice = sipp.phone_calls("alice", "1002")
    wait_ari(
        ari,
        "both legs up",
        lambda ch: len(of(ch, "PJSIP/alice", "Up")) == 1 and len(of(ch, "PJSIP/bob", "Up")) == 1,
    )
    return check_legs(pbx, ari), alice, bob


def ended_through_the_api(pbx, ari, resp, ids: set[str], parties: list[Party]) -> float:
    """The answer is 204; Asterisk has none of `ids` and the list drops them within 1 s of
    the answer; each sipp got its BYE (and ended cleanly). Returns the list's delay."""
    answered = time.monotonic()
    assert resp.json() == {
        "responses": [{"code": "204", "key": "", "message": resp.json()["responses"][0]["message"]}]
    }
    while ids & set(system_view(pbx)):
        assert time.monotonic() - answered <= 1.0, "legs still listed 1 s after the hangup"
        time.sleep(0.02)
    delay = time.monotonic() - answered
    wait_ari(ari, "the legs gone from GET /channels", lambda ch: not ids & {c["id"] for c in ch}, 5)
    for party in parties:
        assert party.proc.wait(15) == 0, f"sipp {party.label} did not end cleanly"
        assert "BYE sip:" in party.messages.read_text(errors="replace"), party.label
    return delay


def test_hangup_by_callid_ends_every_leg(idle, pbx, sipp):
    ari = idle
    rows, alice, bob = call_alice_to_bob(ari, pbx, sipp)
    ids = {r["uniqueid"] for r in rows.values()}
    callid = rows["PJSIP/alice"]["callid"]
    started = time.monotonic()
    resp = hang_up(pbx, "acme", callid=callid)
    took = time.monotonic() - started
    delay = ended_through_the_api(pbx, ari, resp, ids, [alice, bob])
    print(
        f"hangup by callid: API answered in {took * 1000:.0f} ms, legs left the list "
        f"{delay * 1000:.0f} ms after the answer"
    )


def test_hangup_by_uniqueid_ends_that_leg_and_so_the_call(idle, pbx, sipp):
    ari = idle
    rows, alice, bob = call_alice_to_bob(ari, pbx, sipp)
    ids = {r["uniqueid"] for r in rows.values()}
    bobs = rows["PJSIP/bob"]["uniqueid"]
    started = time.monotonic()
    resp = hang_up(pbx, "reseller", uniqueid=bobs, machine="1")
    took = time.monotonic() - started
    # Asterisk ends alice's leg too when the leg she dialled hangs up (Dial returns).
    delay = ended_through_the_api(pbx, ari, resp, ids, [alice, bob])
    print(
        f"hangup by uniqueid: API answered in {took * 1000:.0f} ms, legs left the list "
        f"{delay * 1000:.0f} ms after the answer"
    )


def test_person_of_another_customer_gets_the_nonexistent_call_answer(idle, pbx, sipp):
    ari = idle
    rows, alice, bob = call_alice_to_bob(ari, pbx, sipp)
    ids = {r["uniqueid"] for r in rows.values()}
    callid = rows["PJSIP/alice"]["callid"]
    for params in ({"callid": callid}, {"uniqueid": rows["PJSIP/bob"]["uniqueid"]}):
        key = next(iter(params))
        theirs = hang_up(pbx, "beta", **params).content  # Beta GmbH's administrator
        missing = hang_up(pbx, "beta", **{key: "1.999999"}).content
        assert theirs == missing
        assert b'"code":"404"' in theirs
    time.sleep(0.5)
    assert ids <= {c["id"] for c in ari.channels()}, "the call must still be up"
    assert ids <= set(system_view(pbx))
