"""Real SIP calls through the sandbox Asterisk: the API lists exactly Asterisk's legs."""

from __future__ import annotations

import pytest

from sandbox.sippctl import Party, SippPool
from tests.e2e.support import check_legs, hang_up_and_check, of, visible, wait_ari

pytestmark = pytest.mark.e2e


def finish(
    pbx, ari, sipp: SippPool, first: dict, rows: dict, uas: list[tuple[dict, Party]]
) -> None:
    """Hang up through the first leg; the legs leave the API within 1 s of leaving Asterisk;
    a dialled leg's sip_callid is the Call-ID that Asterisk sent to that leg's sipp."""
    ids = {r["uniqueid"] for r in rows.values()}
    delay = hang_up_and_check(pbx, ari, first["uniqueid"], ids)
    print(f"legs left the API {delay * 1000:.0f} ms after Asterisk ended them")
    for party in sipp.parties:
        party.proc.wait(15)
    for row, party in uas:
        assert row["sip_callid"] in party.call_ids(), (row, party.call_ids())


def both_up(a: str, b: str):
    return lambda ch: len(of(ch, a, "Up")) == 1 and len(of(ch, b, "Up")) == 1


def test_inbound_trunk_call_to_alice_rings_then_is_answered(idle, pbx, sipp):
    ari = idle
    alice = sipp.phone_answers("alice", ring_ms=2500)
    carrier = sipp.carrier_calls("0201112222", "0207946000", "Dentist")
    wait_ari(ari, "alice ringing", lambda ch: of(ch, "PJSIP/alice", "Ringing"))
    rows = check_legs(pbx, ari)
    assert set(rows) == {"PJSIP/trunk1", "PJSIP/alice"}
    trunk, leg = rows["PJSIP/trunk1"], rows["PJSIP/alice"]
    assert (leg["status"], leg["answered"]) == ("Ringing", 0)
    assert trunk["answered"] == 0
    assert trunk["sip_callid"] == carrier.call_id
    assert trunk["callid"] == trunk["uniqueid"] == leg["callid"]

    wait_ari(ari, "both legs up", both_up("PJSIP/alice", "PJSIP/trunk1"))
    rows = check_legs(pbx, ari)
    trunk, leg = rows["PJSIP/trunk1"], rows["PJSIP/alice"]
    assert leg["status"] == "Up" and leg["answered"] >= leg["start"]
    for row in (trunk, leg):
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("external", "0207946000", 3)
        assert row["cnumber"] == "0201112222"
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "1001", 3)
        assert row["direction"] == "in"
        assert (row["ingroup"], row["peer"]) == (10, 0)  # peer is a destination field

    ids = {trunk["uniqueid"], leg["uniqueid"]}
    assert visible(pbx, "acme", ids) == ids
    assert visible(pbx, "reseller", ids, customer="recursive") == ids
    assert visible(pbx, "beta", ids) == set()
    named = {r["uniqueid"]: r for r in pbx.list("acme", names=1)}
    assert named[trunk["uniqueid"]]["snumber_name"] == "Dentist"  # Acme's own entry
    assert named[leg["uniqueid"]]["dnumber_name"] == "Alice Smith"
    finish(pbx, ari, sipp, trunk, rows, [(leg, alice)])


def test_internal_call_alice_to_bob(idle, pbx, sipp):
    ari = idle
    bob = sipp.phone_answers("bob", ring_ms=1000)
    alice = sipp.phone_calls("alice", "1002")
    wait_ari(ari, "bob ringing", lambda ch: of(ch, "PJSIP/bob", "Ringing"))
    rows = check_legs(pbx, ari)
    assert rows["PJSIP/bob"]["answered"] == rows["PJSIP/alice"]["answered"] == 0
    wait_ari(ari, "both legs up", both_up("PJSIP/alice", "PJSIP/bob"))
    rows = check_legs(pbx, ari)
    assert set(rows) == {"PJSIP/alice", "PJSIP/bob"}
    caller, callee = rows["PJSIP/alice"], rows["PJSIP/bob"]
    assert caller["sip_callid"] == alice.call_id
    for row in (caller, callee):
        assert row["answered"] > 0 and row["callid"] == caller["uniqueid"]
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("phone", "1001", 3)
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "1002", 3)
        assert row["cnumber"] == "1002"
        assert row["direction"] == "internal"
        assert (row["callerid_internal"], row["callername_external"]) == ("1001", "Acme Ltd")
    ids = {caller["uniqueid"], callee["uniqueid"]}
    assert visible(pbx, "acme", ids) == ids
    assert visible(pbx, "reseller", ids, customer="recursive") == ids
    assert visible(pbx, "beta", ids) == set()
    named = {r["uniqueid"]: r for r in pbx.list("acme", names=1)}
    assert named[caller["uniqueid"]]["snumber_name"] == "Alice Smith"
    assert named[callee["uniqueid"]]["dnumber_name"] == "Bob Jones"
    finish(pbx, ari, sipp, caller, rows, [(callee, bob)])


def test_outbound_call_alice_to_0207946000(idle, pbx, sipp):
    ari = idle
    carrier = sipp.carrier_answers(ring_ms=1000)
    alice = sipp.phone_calls("alice", "0207946000")
    wait_ari(ari, "the carrier ringing", lambda ch: of(ch, "PJSIP/trunk1", "Ringing"))
    check_legs(pbx, ari)
    wait_ari(ari, "both legs up", both_up("PJSIP/alice", "PJSIP/trunk1"))
    rows = check_legs(pbx, ari)
    assert set(rows) == {"PJSIP/alice", "PJSIP/trunk1"}
    caller, trunk = rows["PJSIP/alice"], rows["PJSIP/trunk1"]
    assert caller["sip_callid"] == alice.call_id
    for row in (caller, trunk):
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("phone", "1001", 3)
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("external", "0207946000", 0)
        assert (row["peer"], row["outgroup"]) == (1, 20)
        assert row["direction"] == "out"
    ids = {caller["uniqueid"], trunk["uniqueid"]}
    assert visible(pbx, "acme", ids) == ids
    assert visible(pbx, "acme", ids, direction="in_out") == ids
    assert visible(pbx, "acme", ids, direction="internal") == set()
    assert visible(pbx, "beta", ids) == set()
    named = {r["uniqueid"]: r for r in pbx.list("acme", names=1)}
    assert named[trunk["uniqueid"]]["dnumber_name"] == "Dentist"
    reseller = {r["uniqueid"]: r for r in pbx.list("reseller", customer="recursive", names=1)}
    assert reseller[trunk["uniqueid"]]["dnumber_name"] == "Dentist"  # from the leg's owner, 3
    finish(pbx, ari, sipp, caller, rows, [(trunk, carrier)])


def test_ring_group_through_local_channels(idle, pbx, sipp):
    ari = idle
    alice = sipp.phone_answers("alice", scenario="uas_ring.xml")
    bob = sipp.phone_answers("bob", ring_ms=2500, media_port=6110)
    carrier = sipp.carrier_calls("0201113333", "0207946000", "Dentist")
    wait_ari(
        ari,
        "alice and bob ringing",
        lambda ch: of(ch, "PJSIP/alice", "Ringing") and of(ch, "PJSIP/bob", "Ringing"),
    )
    ringing = check_legs(pbx, ari)
    assert set(ringing) == {
        "PJSIP/trunk1",
        "PJSIP/alice",
        "PJSIP/bob",
        "Local/1001@ringgroup;1",
        "Local/1001@ringgroup;2",
        "Local/1002@ringgroup;1",
        "Local/1002@ringgroup;2",
    }
    trunk = ringing["PJSIP/trunk1"]
    assert trunk["sip_callid"] == carrier.call_id
    for row in ringing.values():
        assert row["callid"] == trunk["uniqueid"]
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("external", "0207946000", 3)
        assert row["direction"] == "in"
    assert ringing["PJSIP/alice"]["answered"] == ringing["PJSIP/bob"]["answered"] == 0
    assert ringing["PJSIP/alice"]["status"] == "Ringing"
    for n, line in (("1001", "PJSIP/alice"), ("1002", "PJSIP/bob")):
        for key in (f"Local/{n}@ringgroup;1", f"Local/{n}@ringgroup;2", line):
            assert (ringing[key]["dtype"], ringing[key]["dnumber"]) == ("phone", n), key
    ids = {r["uniqueid"] for r in ringing.values()}
    assert visible(pbx, "acme", ids) == ids
    assert visible(pbx, "beta", ids) == set()

    wait_ari(
        ari,
        "bob up, alice's legs gone",
        lambda ch: (
            of(ch, "PJSIP/bob", "Up")
            and not of(ch, "PJSIP/alice")
            and not of(ch, "Local/1001@ringgroup")
        ),
    )
    rows = check_legs(pbx, ari)
    assert set(rows) == {
        "PJSIP/trunk1",
        "PJSIP/bob",
        "Local/1002@ringgroup;1",
        "Local/1002@ringgroup;2",
    }
    assert all(r["answered"] > 0 for r in rows.values())
    assert visible(pbx, "reseller", ids, customer="recursive") == {
        r["uniqueid"] for r in rows.values()
    }
    finish(
        pbx,
        ari,
        sipp,
        rows["PJSIP/trunk1"],
        rows,
        [(ringing["PJSIP/alice"], alice), (rows["PJSIP/bob"], bob)],
    )


def test_beta_inbound_call_to_carol_is_beta_s_not_acme_s(idle, pbx, sipp):
    ari = idle
    carol = sipp.phone_answers("carol", ring_ms=2500)
    carrier = sipp.carrier_calls("0202224444", "0201239876", "Supplier")
    wait_ari(ari, "carol ringing", lambda ch: of(ch, "PJSIP/carol", "Ringing"))
    rows = check_legs(pbx, ari)
    trunk, leg = rows["PJSIP/trunk1"], rows["PJSIP/carol"]
    assert (leg["status"], leg["answered"], trunk["answered"]) == ("Ringing", 0, 0)
    assert trunk["sip_callid"] == carrier.call_id
    ids = {trunk["uniqueid"], leg["uniqueid"]}
    assert visible(pbx, "beta", ids) == ids
    assert visible(pbx, "acme", ids) == set()
    assert visible(pbx, "reseller", ids, customer="recursive") == ids
    assert visible(pbx, "reseller", ids, customer=4) == ids
    assert visible(pbx, "reseller", ids, customer=3) == set()

    wait_ari(ari, "both legs up", both_up("PJSIP/carol", "PJSIP/trunk1"))
    rows = check_legs(pbx, ari)
    trunk, leg = rows["PJSIP/trunk1"], rows["PJSIP/carol"]
    for row in (trunk, leg):
        assert row["answered"] > 0 and row["status"] == "Up"
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("external", "0201239876", 4)
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "2001", 4)
        assert row["direction"] == "in"
    for user, params in (("beta", {}), ("reseller", {"customer": "recursive"})):
        named = {r["uniqueid"]: r for r in pbx.list(user, names=1, **params)}
        assert named[trunk["uniqueid"]]["snumber_name"] == "Beta's Supplier", user
        assert named[leg["uniqueid"]]["dnumber_name"] == "Carol Meyer", user
    count = pbx.call_api("beta", count=1)["data"]
    assert count == {"count": 2}
    finish(pbx, ari, sipp, trunk, rows, [(leg, carol)])


def test_ari_originated_call_dave_to_carol(idle, pbx, sipp):
    ari = idle
    dave = sipp.phone_answers("dave", ring_ms=500)
    carol = sipp.phone_answers("carol", ring_ms=1000, media_port=6120)
    first = ari.originate("PJSIP/dave", "phones", "2001", "Dave Keller <2002>")
    wait_ari(ari, "both legs up", both_up("PJSIP/dave", "PJSIP/carol"))
    rows = check_legs(pbx, ari)
    assert set(rows) == {"PJSIP/dave", "PJSIP/carol"}
    origin, callee = rows["PJSIP/dave"], rows["PJSIP/carol"]
    assert origin["uniqueid"] == first["id"]
    for row in (origin, callee):
        assert row["callid"] == first["id"]
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("phone", "2002", 4)
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "2001", 4)
        assert row["direction"] == "internal"
    ids = {origin["uniqueid"], callee["uniqueid"]}
    assert visible(pbx, "beta", ids, callid=first["id"]) == ids
    assert visible(pbx, "acme", ids) == set()
    finish(pbx, ari, sipp, origin, rows, [(origin, dave), (callee, carol)])
