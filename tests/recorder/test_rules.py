"""SPEC §4 rules on legs built in memory: no database, no socket, no recording.

Each test drives LiveLegs with typed events (as ari/events.py makes them) against a
Provisioned built here, and reads the rows it would write.
"""

from __future__ import annotations

from pbxcontrol.ari.channel import AsteriskInfo, Channel
from pbxcontrol.ari.events import (
    ChannelDestroyed,
    ChannelSnapshotEvent,
    ChannelVarset,
    Dial,
    LazyChannel,
    OtherVarset,
)
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.provisioned import LineInfo, PeerInfo, Provisioned

T0 = 1_800_000_000.0
ALICE = LineInfo(3, "1001", "1001", "0201112222", "Alice", "Acme Ltd")
BOB = LineInfo(3, "1002", "", "", "", "")
CAROL = LineInfo(4, "2001", "", "", "", "")
PROV = Provisioned(
    lines={"PJSIP/alice": ALICE, "PJSIP/bob": BOB, "PJSIP/carol": CAROL},
    peers={
        "PJSIP/trunk1": PeerInfo(id=1, ingroup=10, outgroup=20, billing_peer=1),
        "PJSIP/trunk2": PeerInfo(id=2, ingroup=11, outgroup=21, billing_peer=1),
    },
    numbers={"0201112222": 3, "0202224444": 4},
    max_calls={3: 1},
)


def chan(uid: str, name: str, linkedid: str | None = None, **kw) -> Channel:
    values = dict(
        state="Ring",
        created=T0,
        caller_number="",
        caller_name="",
        exten="",
        dnid="",
        protocol_id="",
    )
    values.update(kw)
    return Channel(id=uid, name=name, linkedid=linkedid or uid, **values)


def raw_channel(uid: str, name: str) -> dict:
    """A channel as ARI sends it, for the events that keep it unparsed."""
    return {"id": uid, "name": name, "state": "Up", "creationtime": "2027-01-15T08:00:00.000+0000"}


class Call:
    """A LiveLegs for machine 1 and helpers to feed it and read its rows."""

    def __init__(self) -> None:
        self.live = LiveLegs(1, lambda: PROV)
        self.seq = 0

    def see(self, *channels: Channel, ts: float = T0) -> None:
        for ch in channels:
            self.apply(ChannelSnapshotEvent(ts, ch))

    def dial(self, caller: Channel, peer: Channel, dialstring: str = "", status: str = ""):
        self.apply(Dial(T0, caller, peer, dialstring, status))

    def apply(self, event) -> None:
        self.seq += 1
        self.live.apply(event, self.seq)

    def rows(self) -> dict[str, dict]:
        """The row of every live leg, as the next write would have it."""
        self.live.changes().committed()
        return {uid: leg.row() for uid, leg in self.live.legs.items()}


def alice_calls_bob(call: Call) -> tuple[Channel, Channel]:
    alice = chan("a", "PJSIP/alice-01", caller_number="1001", caller_name="A", exten="1002")
    bob = chan("b", "PJSIP/bob-02", linkedid="a")
    call.see(alice, bob)
    call.dial(alice, bob, "PJSIP/bob")
    return alice, bob


# -- source ------------------------------------------------------------------------------
def test_a_phone_source_takes_the_line_number_customer_and_caller_ids():
    call = Call()
    alice_calls_bob(call)
    for row in call.rows().values():
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("phone", "1001", 3)
        assert (row["callerid_internal"], row["callerid_external"]) == ("1001", "0201112222")
        assert (row["callername_internal"], row["callername_external"]) == ("Alice", "Acme Ltd")


def test_a_line_without_provisioned_caller_ids_sends_the_caller_id_as_received():
    call = Call()
    bob = chan("b", "PJSIP/bob-01", caller_number="555", caller_name="Bobby", exten="1001")
    call.see(bob)
    row = call.rows()["b"]
    assert (row["snumber"], row["callerid_internal"], row["callername_external"]) == (
        "1002",
        "555",
        "Bobby",
    )


def test_a_call_from_a_peer_is_billed_to_the_owner_of_the_called_number():
    call = Call()
    trunk = chan("t", "PJSIP/trunk1-01", caller_number="0207946000", dnid="0202224444")
    alice = chan("a", "PJSIP/alice-02", linkedid="t")
    call.see(trunk, alice)
    call.dial(trunk, alice, "PJSIP/alice")
    for row in call.rows().values():
        assert (row["stype"], row["snumber"], row["scustomer"]) == ("external", "0207946000", 4)
        assert row["cnumber"] == "0202224444"
        assert (row["direction"], row["ingroup"]) == ("in", 10)
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "1001", 3)


def test_a_call_from_neither_a_line_nor_a_peer_has_no_source_customer():
    call = Call()
    call.see(chan("o", "PJSIP/unknown-01", caller_number="42"))
    row = call.rows()["o"]
    assert (row["stype"], row["snumber"], row["scustomer"]) == ("", "42", 0)


# -- cnumber: CALLERID(dnid), else the first extension but "s" ----------------------------
def test_cnumber_is_the_dnid_else_the_first_extension_that_is_not_s():
    call = Call()
    call.see(chan("a", "PJSIP/alice-01", exten="s"))
    assert call.rows()["a"]["cnumber"] == ""  # "s" is where a numberless channel starts
    call.see(chan("a", "PJSIP/alice-01", exten="1002"))
    call.see(chan("a", "PJSIP/alice-01", exten="rg-step-2"))
    assert call.rows()["a"]["cnumber"] == "1002"  # the first one: the dialplan moves on
    call.see(chan("a", "PJSIP/alice-01", exten="rg-step-2", dnid="0201112222"))
    assert call.rows()["a"]["cnumber"] == "0201112222"


def test_every_leg_shows_the_presentation_and_cnumber_of_the_originating_leg():
    call = Call()
    alice, bob = alice_calls_bob(call)
    call.see(chan("a", alice.name, exten="1002", presentation=35))
    call.see(chan("b", bob.name, linkedid="a", exten="9999", presentation=0))
    rows = call.rows()
    assert {r["spresent"] for r in rows.values()} == {35}
    assert {r["cnumber"] for r in rows.values()} == {"1002"}


# -- destination --------------------------------------------------------------------------
def test_a_call_to_a_peer_carries_the_dialled_number_and_the_peer():
    call = Call()
    alice = chan("a", "PJSIP/alice-01", exten="0207946000")
    trunk = chan("t", "PJSIP/trunk1-02", linkedid="a")
    call.see(alice, trunk)
    call.dial(alice, trunk, "PJSIP/0207946000@trunk1")
    for row in call.rows().values():
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("external", "0207946000", 0)
        assert (row["peer"], row["billing_peer"], row["outgroup"]) == (1, 1, 20)
        assert (row["direction"], row["ingroup"]) == ("out", 0)


def test_a_phone_to_phone_call_is_internal_and_goes_to_the_line_called():
    call = Call()
    alice_calls_bob(call)
    for row in call.rows().values():
        assert (row["dtype"], row["dnumber"], row["dcustomer"]) == ("phone", "1002", 3)
        assert row["direction"] == "internal"


def test_local_channels_are_followed_to_the_real_endpoint():
    call = Call()
    alice = chan("a", "PJSIP/alice-01", exten="600")
    one = chan("l1", "Local/1002@rg-00000001;1", linkedid="a")
    two = chan("l2", "Local/1002@rg-00000001;2", linkedid="a")
    call.see(alice, one, two)
    call.dial(alice, one, "Local/1002@rg")
    rows = call.rows()
    assert {r["dtype"] for r in rows.values()} == {""}  # not known until ;2 dials
    bob = chan("b", "PJSIP/bob-02", linkedid="a")
    call.see(bob)
    call.dial(two, bob, "PJSIP/bob")
    rows = call.rows()
    for uid in ("a", "l1", "l2", "b"):
        assert (rows[uid]["dtype"], rows[uid]["dnumber"]) == ("phone", "1002"), uid


def test_a_trunk_to_trunk_forward_shows_one_in_and_one_out_leg():
    call = Call()
    inbound = chan("i", "PJSIP/trunk1-01", caller_number="0207946000", dnid="0201112222")
    outbound = chan("o", "PJSIP/trunk2-02", linkedid="i")
    call.see(inbound, outbound)
    call.dial(inbound, outbound, "PJSIP/0755@trunk2")
    rows = call.rows()
    assert (rows["i"]["direction"], rows["o"]["direction"]) == ("in", "out")
    assert (rows["i"]["ingroup"], rows["o"]["ingroup"]) == (10, 0)
    assert (rows["o"]["dnumber"], rows["o"]["peer"], rows["o"]["outgroup"]) == ("0755", 2, 21)


# -- dialplan overrides -------------------------------------------------------------------
def test_pbx_variables_override_that_field_of_that_leg_only():
    call = Call()
    alice, bob = alice_calls_bob(call)
    for variable, value in (("PBX_DTYPE", "queue"), ("PBX_SCUSTOMER", "5"), ("PBX_PEER", "x")):
        call.apply(ChannelVarset(T0, alice, variable, value))
    rows = call.rows()
    assert (rows["a"]["dtype"], rows["a"]["scustomer"], rows["a"]["peer"]) == ("queue", 5, 0)
    assert (rows["b"]["dtype"], rows["b"]["scustomer"]) == ("phone", 3)


# -- live legs ----------------------------------------------------------------------------
def test_an_ended_leg_is_never_resurrected_by_a_late_event():
    call = Call()
    alice, _ = alice_calls_bob(call)
    call.apply(ChannelDestroyed(T0 + 5, alice, 16, "Normal Clearing"))
    call.see(alice)  # ChannelLeftBridge after ChannelDestroyed
    call.apply(OtherVarset(T0 + 6, LazyChannel("a", raw_channel("a", "PJSIP/alice-01"))))
    assert "a" not in call.live.legs
    ended = call.live.changes().ended
    assert [(r["uniqueid"], r["cause"], r["stype"]) for r in ended] == [("a", 16, "phone")]


def test_an_uninteresting_varset_of_an_unknown_channel_creates_its_leg():
    call = Call()
    call.apply(OtherVarset(T0, LazyChannel("x", raw_channel("x", "PJSIP/bob-09"))))
    assert call.rows()["x"]["status"] == "Up"


def test_reconcile_ends_the_legs_asterisk_no_longer_has():
    call = Call()
    alice, bob = alice_calls_bob(call)
    call.live.reconcile(AsteriskInfo("boot-1"), [alice, bob], call.seq, T0)
    call.live.changes().committed()
    live, ended = call.live.reconcile(AsteriskInfo("boot-1"), [alice], call.seq, T0 + 9)
    assert (live, ended) == (1, 1)
    assert [(r["uniqueid"], r["cause_txt"]) for r in call.live.changes().ended] == [
        ("b", "gone from Asterisk")
    ]


def test_a_changed_startup_time_ends_every_leg():
    call = Call()
    alice, bob = alice_calls_bob(call)
    call.live.reconcile(AsteriskInfo("boot-1"), [alice, bob], call.seq, T0)
    call.live.changes().committed()
    # Asterisk restarted and reused the ids: they are new channels, not the old legs.
    assert call.live.reconcile(AsteriskInfo("boot-2"), [alice, bob], call.seq, T0 + 9) == (0, 2)
    causes = {r["cause_txt"] for r in call.live.changes().ended}
    assert causes == {"Asterisk restarted"}


def test_legs_seen_only_through_get_channels_are_related_by_their_linkedid():
    call = Call()
    trunk = chan("t", "PJSIP/trunk1-01", caller_number="0207946000", dnid="0201112222")
    one = chan("l1", "Local/1001@in-01;1", linkedid="t", created=T0 + 1)
    two = chan("l2", "Local/1001@in-01;2", linkedid="t", created=T0 + 1)
    alice = chan("a", "PJSIP/alice-02", linkedid="t", created=T0 + 2)
    call.live.reconcile(AsteriskInfo("boot-1"), [trunk, one, two, alice], 0, T0 + 3)
    legs = call.live.legs
    assert (legs["t"].dialled, legs["l1"].dialled_by, legs["a"].dialled_by) == ("l1", "t", "t")
    assert legs["l2"].dialled_by == ""  # a ;2 half is dialled by its ;1 half, not the origin
    rows = call.rows()
    assert {r["scustomer"] for r in rows.values()} == {3}
    assert {r["direction"] for r in rows.values()} == {"in"}


def test_the_second_concurrent_call_over_max_calls_is_overmax_and_stays_so():
    call = Call()
    alice_calls_bob(call)
    call.rows()
    carol = chan("c", "PJSIP/bob-03", exten="2001")
    call.see(carol)
    rows = call.rows()
    assert (rows["a"]["overmax"], rows["b"]["overmax"], rows["c"]["overmax"]) == (0, 0, 1)
