"""calls/make (click-to-call, SPEC §11.4) against the sandbox Asterisk, through a `pbxcontrol
record` process from an `api` with no ARI settings (test_control's `split`, on SQLite and on
PostgreSQL): alice's phone rings first and answers; then bob's sipp receives the INVITE; the
call is listed under Acme from its first appearance, with the id the API answered."""

from __future__ import annotations

import time

import pytest

from tests.e2e.support import check_legs, of, system_view, wait_ari
from tests.e2e.test_control import control, dialplan, split  # noqa: F401 (fixtures)

pytestmark = pytest.mark.e2e


def test_click_to_call_rings_the_line_then_the_called_party(split, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, split.api
    alice = sipp.phone_answers("alice", ring_ms=500)
    bob = sipp.phone_answers("bob", ring_ms=200)
    started = time.monotonic()
    answer = control(pbx, "make", "acme", stype="phone", snumber="1001", cnumber="1002", wait="1")
    took = time.monotonic() - started
    assert answer["responses"][0]["code"] == "200", answer
    data = answer["data"]
    party1 = data["uniqueid"]
    assert data == {"machine": 1, "callid": party1, "uniqueid": party1}
    assert party1.startswith("pbxc-") and party1.endswith("-party1")
    # Every sight of party 1 in the list, from the first, is Acme's call from alice's line.
    seen: list[dict] = []
    deadline = time.monotonic() + 15
    while not of(ari.channels(), "PJSIP/bob", "Up"):
        row = system_view(pbx).get(party1)
        if row is not None:
            seen.append(row)
        assert time.monotonic() < deadline, (seen[-1:], ari.channels())
        time.sleep(0.05)
    assert seen, "party 1 never listed before party 2 answered"
    for row in seen:
        assert (row["scustomer"], row["stype"], row["snumber"]) == (3, "phone", "1001"), row
        assert row["cnumber"] == "1002" and row["channel"].startswith("PJSIP/alice-"), row
    assert seen[0]["status"] in ("Down", "Ringing", "Up")
    assert "INVITE sip:" in alice.messages.read_text(errors="replace")
    assert "INVITE sip:" in bob.messages.read_text(errors="replace")
    rows = check_legs(pbx, ari)
    alices, bobs = rows["PJSIP/alice"], rows["PJSIP/bob"]
    assert alices["uniqueid"] == party1 and bobs["callid"] == party1
    assert (bobs["dtype"], bobs["dnumber"], bobs["dcustomer"]) == ("phone", "1002", 3)
    # Beta sees none of it; Acme's own list does.
    assert not [r for r in pbx.list("beta") or [] if r["callid"] == party1]
    assert {r["uniqueid"] for r in pbx.list("acme") or []} >= {party1, bobs["uniqueid"]}
    ended = control(pbx, "hangup", "acme", callid=party1)
    assert ended["responses"][0]["code"] == "204", ended
    wait_ari(ari, "the call gone", lambda ch: not of(ch, "PJSIP/alice") and not of(ch, "PJSIP/bob"))
    for party in (alice, bob):
        assert party.proc.wait(15) == 0, party.label
    print(f"calls/make through the recording process: API answered in {took * 1000:.0f} ms")


def test_a_delayed_click_to_call_rings_the_line_when_due_not_before(split, dialplan, sipp):  # noqa: F811
    ari, pbx = dialplan, split.api
    alice = sipp.phone_answers("alice", ring_ms=500)
    bob = sipp.phone_answers("bob", ring_ms=200)
    started = time.monotonic()
    answer = control(pbx, "make", "acme", stype="phone", snumber="1001", cnumber="1002", delay="2")
    took = time.monotonic() - started
    assert answer["responses"][0]["code"] == "204" and "data" not in answer, answer
    assert took < 1.0, took  # scheduled: answered at once, not when the call exists
    while not of(ari.channels(), "PJSIP/alice"):  # nothing rings before it is due
        assert time.monotonic() - started < 5, "alice's phone never rang"
        time.sleep(0.01)
    rang = time.monotonic() - started
    # Not before it is due, and when due rather than seconds later (the bound leaves room for
    # a loaded machine: Asterisk and sipp share its cores).
    assert 2.0 <= rang < 3.0, f"alice's phone rang {rang:.2f} s after the request"
    wait_ari(ari, "bob answered", lambda ch: of(ch, "PJSIP/bob", "Up"), 15)
    rows = check_legs(pbx, ari)
    party1 = rows["PJSIP/alice"]["uniqueid"]
    assert party1.startswith("pbxc-") and party1.endswith("-party1")
    assert rows["PJSIP/bob"]["callid"] == party1
    ended = control(pbx, "hangup", "acme", callid=party1)
    assert ended["responses"][0]["code"] == "204", ended
    wait_ari(ari, "the call gone", lambda ch: not of(ch, "PJSIP/alice") and not of(ch, "PJSIP/bob"))
    for party in (alice, bob):
        assert party.proc.wait(15) == 0, party.label
    print(f"calls/make with delay=2: answered in {took * 1000:.0f} ms, rang after {rang:.2f} s")
