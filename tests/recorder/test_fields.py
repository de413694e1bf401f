"""Fields that no single recording exercises: overmax, PBX_<FIELD> overrides, history."""

from __future__ import annotations

import copy
import json

from sqlalchemy import select

from pbxcontrol.ari.events import parse_event
from pbxcontrol.db.models import LegHistory
from pbxcontrol.recorder import store
from pbxcontrol.recorder.live import LiveLegs
from pbxcontrol.recorder.provisioned import ProvisionedCache
from tests.fakeari import load_recording
from tests.recorder.conftest import live_rows


def events_of(name: str, suffix: str = "") -> list[dict]:
    """The recording's events; `suffix` makes every channel id (and linkedid) a new one."""
    out = []
    for record in load_recording(name):
        if record["type"] != "event":
            continue
        text = json.dumps(record["data"])
        if suffix:
            for ch_id in _ids(record["data"]):
                text = text.replace(f'"{ch_id}"', f'"{ch_id}{suffix}"')
        out.append(json.loads(text))
    return out


def _ids(event):
    for key in ("channel", "peer", "caller"):
        ch = event.get(key)
        if isinstance(ch, dict):
            yield ch["id"]
            yield (ch.get("channelvars") or {}).get("CHANNEL(linkedid)", ch["id"])


def until_answered(events):
    """Events up to (not including) the first hangup request."""
    for i, e in enumerate(events):
        if e["type"] == "ChannelHangupRequest":
            return events[:i]
    return events


class Driver:
    def __init__(self, sessions):
        self.sessions = sessions
        self.recorder = LiveLegs(1, ProvisionedCache(sessions).get)
        self.seq = 0

    def feed(self, events):
        for raw in events:
            event = parse_event(json.dumps(raw))
            if event is not None:
                self.seq += 1
                self.recorder.apply(event, self.seq)
            with self.sessions.begin() as session:
                done = store.flush(self.recorder, session)
            done()


def test_third_concurrent_call_of_a_customer_with_max_calls_2_is_overmax(sessions):
    # Acme (customer 3) has max_calls = 2 in the test tree; each call here is billed to it.
    driver = Driver(sessions)
    calls = [until_answered(events_of("trunk_to_phone_answered", f"-{n}")) for n in range(3)]
    for call in calls:
        driver.feed(call)
    rows = live_rows(sessions)
    by_call = {}
    for row in rows.values():
        by_call.setdefault(row["callid"], set()).add(row["overmax"])
    assert [by_call[c[0]["channel"]["id"]] for c in calls] == [{0}, {0}, {1}]
    # Beta (customer 4, no limit) is never over.
    driver.feed(until_answered(events_of("trunk_to_phone_cancelled", "-b")))
    beta = [r for r in live_rows(sessions).values() if r["scustomer"] == 4]
    assert beta and {r["overmax"] for r in beta} == {0}


def test_dialplan_overrides_set_fields_of_that_leg(sessions):
    driver = Driver(sessions)
    events = until_answered(events_of("phone_to_phone_answered"))
    alice = next(e for e in events if e["type"] == "ChannelCreated")["channel"]
    overrides = {
        "PBX_DTYPE": "queue",
        "PBX_SCUSTOMER": "5",
        "PBX_DNUMBER": "800",
        "PBX_OVERMAX": "not-a-number",
        "PBX_NOSUCHFIELD": "x",
    }
    for variable, value in overrides.items():
        events.append(
            {
                "type": "ChannelVarset",
                "timestamp": "2026-11-27T06:50:00.000+0000",
                "variable": variable,
                "value": value,
                "channel": copy.deepcopy(alice),
            }
        )
    driver.feed(events)
    rows = live_rows(sessions)
    leg = rows[alice["id"]]
    assert (leg["dtype"], leg["scustomer"], leg["dnumber"]) == ("queue", 5, "800")
    assert leg["overmax"] == 0  # a non-number for an integer field is ignored
    other = next(r for uid, r in rows.items() if uid != alice["id"])
    assert (other["dtype"], other["scustomer"]) == ("phone", 3)  # only that leg


def test_ended_legs_keep_their_fields_and_cause_in_history(sessions):
    driver = Driver(sessions)
    driver.feed(events_of("busy"))
    assert live_rows(sessions) == {}
    with sessions() as s:
        rows = s.execute(
            select(LegHistory.channel, LegHistory.cause, LegHistory.stype, LegHistory.scustomer)
        ).all()
    assert {(r.cause, r.stype, r.scustomer) for r in rows} == {(17, "phone", 3)}


def test_call_control_plumbing_channels_are_never_legs(sessions):
    """SPEC §11.2 item 7, §11.8: channels the recording process makes for call control are
    `pbxc-<intent>-<role>`; helper halves and snoops are plumbing, never rows; party1,
    party1b and supervisor are real legs."""
    driver = Driver(sessions)
    created = next(e for e in events_of("phone_to_phone_answered") if e["type"] == "ChannelCreated")
    ids = ["pbxc-7-a", "pbxc-7-b", "pbxc-8-snoop", "pbxc-9-party1", "pbxc-9-supervisor"]
    events = []
    for n, channel_id in enumerate(ids):
        event = copy.deepcopy(created)
        event["channel"].update(id=channel_id, name=f"Local/redirect@pbxcontrol-actions-{n};1")
        events.append(event)
    driver.feed(events)
    assert set(live_rows(sessions)) == {"pbxc-9-party1", "pbxc-9-supervisor"}
