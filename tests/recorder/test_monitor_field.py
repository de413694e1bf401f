"""`monitor` of a monitored leg (SPEC §11.8, recorder/live.py): the shipped [pbxcontrol-monitor]
sets PBXC_MONITOR = `<mode>/<monitored uniqueid>` on the supervisor's leg as each ChanSpy
starts; the monitored leg shows the strongest live session on it, which changes with a mode
change and goes when the supervisor hangs up — also after a takeover, when the new holder
knows the supervisor's leg only from its row (`spying`). The events as ARI sends them."""

from __future__ import annotations

from types import SimpleNamespace

import orjson

from pbxcontrol.ari.events import ChannelDestroyed, parse_event
from pbxcontrol.recorder.leg import LiveLeg
from pbxcontrol.recorder.live import LiveLegs
from tests.recorder.test_rules import PROV, T0, Call, alice_calls_bob, chan


def varset(channel_id: str, name: str, variable: str, value: str):
    raw = {
        "type": "ChannelVarset",
        "timestamp": "2027-01-15T08:00:01.000+0000",
        "variable": variable,
        "value": value,
        "channel": {
            "id": channel_id,
            "name": name,
            "state": "Up",
            "creationtime": "2027-01-15T08:00:01.000+0000",
            "caller": {"number": "", "name": ""},
            "connected": {"number": "", "name": ""},
            "dialplan": {"context": "", "exten": "", "priority": 1},
            "accountcode": "",
            "language": "en",
        },
    }
    event = parse_event(orjson.dumps(raw))
    assert event is not None
    return event


def supervisor(call: Call, uid: str, mode: str, target: str = "a"):
    """A supervisor's leg (an originated phone) entering ChanSpy at `mode`."""
    ch = chan(uid, f"PJSIP/carol-{uid}", caller_number="2001")
    call.see(ch)
    call.apply(varset(uid, ch.name, "PBXC_MONITOR", f"{mode}/{target}"))
    return ch


def test_the_monitored_leg_shows_the_strongest_live_session_until_the_last_ends():
    call = Call()
    alice_calls_bob(call)
    carol = supervisor(call, "pbxc-7-supervisor", "listen")
    rows = call.rows()
    assert (rows["a"]["monitor"], rows["b"]["monitor"]) == ("listen", "")
    assert rows["pbxc-7-supervisor"]["monitor"] == ""  # the supervisor's own row: nothing
    assert rows["pbxc-7-supervisor"]["spying"] == "listen/a"
    dave = supervisor(call, "pbxc-8-supervisor", "barge")
    assert call.rows()["a"]["monitor"] == "barge"
    call.apply(varset(carol.id, carol.name, "PBXC_MONITOR", "whisper/a"))  # a mode change
    assert call.rows()["a"]["monitor"] == "barge"
    call.apply(ChannelDestroyed(T0 + 5, dave, 16, "Normal Clearing"))
    assert call.rows()["a"]["monitor"] == "whisper"
    call.apply(ChannelDestroyed(T0 + 6, carol, 16, "Normal Clearing"))
    assert call.rows()["a"]["monitor"] == ""


def test_a_monitor_override_from_the_dialplan_is_ignored():
    call = Call()
    alice, _ = alice_calls_bob(call)
    call.apply(varset("a", alice.name, "PBX_MONITOR", "barge"))
    assert call.rows()["a"]["monitor"] == ""


def test_a_new_holder_clears_the_mode_when_the_supervisor_hangs_up():
    call = Call()
    alice_calls_bob(call)
    carol = supervisor(call, "pbxc-7-supervisor", "whisper")
    written = call.rows()
    # A standby takes over: its legs are the rows the old holder wrote.
    later = LiveLegs(1, lambda: PROV)
    later.take_over(
        [LiveLeg.from_row(SimpleNamespace(**row)) for row in written.values()], "startup"
    )
    assert later.legs["a"].monitor == "whisper"
    later.apply(ChannelDestroyed(T0 + 9, carol, 16, "Normal Clearing"), 1)
    later.changes().committed()
    assert later.legs["a"].row()["monitor"] == ""
