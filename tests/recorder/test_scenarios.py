"""Every recorded real Asterisk 22 scenario, replayed through the recorder.

At every event the live legs are exactly the channels Asterisk had; at each labelled moment
every field of every leg equals the reviewed rows in expected_rows.json (test_reviewed_rows.py
shows each row follows SPEC §4; regenerate with
`python -m tests.recorder.test_scenarios` after a deliberate change, and review the diff);
after hangup no leg remains. The semantic tests below restate SPEC §4 for each scenario.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.fakeari import RECORDINGS
from tests.recorder.conftest import Replay, history_ids, live_rows

EXPECTED = Path(__file__).with_name("expected_rows.json")
SCENARIOS = sorted(p.stem for p in RECORDINGS.glob("*.jsonl"))
REQUIRED = {
    "phone_to_phone_answered",
    "trunk_to_phone_answered",
    "phone_to_trunk_answered",
    "trunk_to_phone_cancelled",
    "busy",
    "ring_group_local",
    "blind_transfer",
    "attended_transfer",
    "mixmonitor",
    "restricted_presentation",
}


def replay_rows(sessions, name: str) -> dict[str, dict[str, dict]]:
    replay = Replay(sessions, name)
    moments: dict[str, dict[str, dict]] = {}
    for label in replay.events():
        assert set(live_rows(sessions)) == set(replay.fake.live), "legs differ from channels"
        if label is not None:
            moments[label] = live_rows(sessions)
    assert live_rows(sessions) == {}, "legs left after hangup"
    created = {
        r["data"]["channel"]["id"]
        for r in replay.records
        if r["type"] == "event" and r["data"]["type"] == "ChannelCreated"
    }
    assert created <= history_ids(sessions)
    return moments


def test_every_required_scenario_is_recorded():
    assert set(SCENARIOS) >= REQUIRED


@pytest.mark.parametrize("name", SCENARIOS)
def test_scenario_rows_match_reviewed_rows(sessions, name):
    expected = json.loads(EXPECTED.read_text())[name]
    assert replay_rows(sessions, name) == expected


def at(sessions, name: str, label: str) -> list[dict]:
    rows = replay_rows(sessions, name)[label]
    return sorted(rows.values(), key=lambda r: r["uniqueid"])


def by_endpoint(rows, prefix):
    return next(r for r in rows if r["channel"].startswith(prefix))


def test_phone_to_phone_is_internal_with_line_caller_ids(sessions):
    rows = at(sessions, "phone_to_phone_answered", "answered")
    alice, bob = by_endpoint(rows, "PJSIP/alice"), by_endpoint(rows, "PJSIP/bob")
    for leg in (alice, bob):
        assert leg["callid"] == alice["uniqueid"]
        assert (leg["stype"], leg["snumber"], leg["scustomer"]) == ("phone", "1001", 3)
        assert (leg["dtype"], leg["dnumber"], leg["dcustomer"]) == ("phone", "1002", 3)
        assert (leg["callerid_internal"], leg["callerid_external"]) == ("1001", "0201112222")
        assert (leg["callername_internal"], leg["callername_external"]) == ("Alice", "Acme Ltd")
        assert leg["direction"] == "internal" and leg["status"] == "Up"
        assert leg["answered"] >= leg["start"] > 0
        assert leg["cnumber"] == "1002" and leg["ctype"] == ""
        assert leg["sip_callid"]  # the SIP Call-ID of a PJSIP leg
    ringing = at(sessions, "phone_to_phone_answered", "ringing")
    assert {r["answered"] for r in ringing} == {0}
    assert by_endpoint(ringing, "PJSIP/bob")["status"] == "Ringing"


def test_inbound_call_is_billed_to_the_owner_of_the_number(sessions):
    rows = at(sessions, "trunk_to_phone_answered", "answered")
    trunk = by_endpoint(rows, "PJSIP/trunk1")
    for leg in rows:
        assert (leg["stype"], leg["snumber"], leg["scustomer"]) == ("external", "0207946000", 3)
        assert leg["cnumber"] == "0201112222" and leg["direction"] == "in"
        assert (leg["ingroup"], leg["peer"], leg["outgroup"]) == (10, 0, 0)
        assert (leg["dtype"], leg["dnumber"], leg["dcustomer"]) == ("phone", "1001", 3)
    assert trunk["callerid_external"] == trunk["callerid_internal"] == "0207946000"


def test_outbound_call_carries_the_peer(sessions):
    rows = at(sessions, "phone_to_trunk_answered", "answered")
    for leg in rows:
        assert (leg["dtype"], leg["dnumber"], leg["dcustomer"]) == ("external", "0207946000", 0)
        assert (leg["peer"], leg["billing_peer"], leg["outgroup"], leg["ingroup"]) == (1, 1, 20, 0)
        assert leg["direction"] == "out" and leg["scustomer"] == 3


def test_ring_group_local_legs_take_the_real_destination(sessions):
    ringing = at(sessions, "ring_group_local", "ringing")
    assert len(ringing) == 7
    for leg in ringing:
        if "1001@" in leg["channel"] or "alice" in leg["channel"]:
            assert leg["dnumber"] == "1001"
        if "1002@" in leg["channel"] or "bob" in leg["channel"]:
            assert leg["dnumber"] == "1002"
    answered = at(sessions, "ring_group_local", "answered")
    assert {(r["dtype"], r["dnumber"], r["dcustomer"]) for r in answered} == {("phone", "1002", 3)}
    assert {r["direction"] for r in answered} == {"in"}
    assert {r["sip_callid"] == "" for r in answered if r["channel"].startswith("Local/")} == {True}


def test_cancelled_call_leaves_nothing(sessions):
    moments = replay_rows(sessions, "trunk_to_phone_cancelled")
    ringing = moments["ringing"].values()
    assert {r["scustomer"] for r in ringing} == {4} and {r["answered"] for r in ringing} == {0}
    # Cancelled before answer: no live leg is left, both legs are in the history.
    assert moments["after_hangup"] == {} and live_rows(sessions) == {}
    assert history_ids(sessions) == set(moments["ringing"])


def test_mixmonitor_path_is_the_recording(sessions):
    rows = at(sessions, "mixmonitor", "answered")
    recording = by_endpoint(rows, "PJSIP/bob")["recording"]
    assert recording.startswith("/var/spool/asterisk/monitor/") and recording.endswith(".wav")


def test_withheld_number_is_reported_as_prohibited(sessions):
    rows = at(sessions, "restricted_presentation", "answered")
    assert {r["spresent"] for r in rows} == {35}
    inbound = at(sessions, "restricted_presentation_inbound", "answered")
    assert {r["spresent"] for r in inbound} == {32}
    plain = at(sessions, "trunk_to_phone_answered", "answered")
    assert {r["spresent"] for r in plain} == {0}


def test_transfers_keep_one_callid_and_follow_the_new_destination(sessions):
    blind = at(sessions, "blind_transfer", "transferred")
    assert len({r["callid"] for r in blind}) == 1
    carol = by_endpoint(blind, "PJSIP/carol")
    assert (carol["dnumber"], carol["dcustomer"], carol["scustomer"]) == ("2001", 4, 3)
    attended = at(sessions, "attended_transfer", "transferred")
    assert len({r["callid"] for r in attended}) == 1
    assert by_endpoint(attended, "PJSIP/carol")["dcustomer"] == 4


def test_bridging_two_calls_moves_the_leg_to_the_older_callid(sessions):
    rows = at(sessions, "bridge_two_calls", "bridged")
    trunk, carol = by_endpoint(rows, "PJSIP/trunk1"), by_endpoint(rows, "PJSIP/carol")
    assert carol["callid"] == trunk["uniqueid"]
    assert carol["stype"] == "external" and carol["direction"] == "in"


def regenerate() -> None:
    """Write expected_rows.json from the current recorder (review the diff before commit)."""
    import tempfile

    from tests.recorder.conftest import sessions as make_sessions

    result = {}
    for name in SCENARIOS:
        with tempfile.TemporaryDirectory() as tmp:
            gen = make_sessions.__wrapped__(Path(tmp))
            factory = next(gen)
            result[name] = replay_rows(factory, name)
            gen.close()
    EXPECTED.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n")
    print(f"wrote {EXPECTED}", file=sys.stderr)


if __name__ == "__main__":
    regenerate()
