"""`recording` of a leg we record through a snoop (SPEC §11.8, recorder/recording.py): the
holder sets PBXC_RECORDING on the snoop (`pbxc-<intent>-record`, named `Snoop/<target>-<n>`
by Asterisk); the snooped leg shows the path, the snoop itself is never a leg, and the path
goes again when the recording stops. The events as ARI sends them (parse_event)."""

from __future__ import annotations

import orjson

from pbxcontrol.ari.events import parse_event
from tests.recorder.test_rules import Call, alice_calls_bob

PATH = "/var/spool/asterisk/recording/3/2026/12/06/a-7.wav"


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


def test_the_snooped_leg_shows_our_recording_and_the_snoop_is_no_leg():
    call = Call()
    alice_calls_bob(call)
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING", PATH))
    rows = call.rows()
    assert set(rows) == {"a", "b"}
    assert (rows["a"]["recording"], rows["b"]["recording"]) == (PATH, "")
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING", ""))
    assert call.rows()["a"]["recording"] == ""


def test_the_variable_on_a_channel_that_is_not_our_snoop_changes_nothing():
    call = Call()
    alice_calls_bob(call)
    call.apply(varset("b", "PJSIP/bob-02", "PBXC_RECORDING", PATH))
    call.apply(varset("pbxc-7-a", "Local/redirect@pbxcontrol-actions-1;1", "PBXC_RECORDING", PATH))
    assert [row["recording"] for row in call.rows().values()] == ["", ""]


def test_recording_paused_follows_our_pause_and_unpause():
    call = Call()
    alice_calls_bob(call)
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING", PATH))
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING_PAUSED", "1"))
    row = call.rows()["a"]
    assert (row["recording"], row["recording_paused"]) == (PATH, 1)  # keeps its path
    assert call.rows()["b"]["recording_paused"] == 0
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING_PAUSED", "0"))
    assert call.rows()["a"]["recording_paused"] == 0
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING_PAUSED", "1"))
    call.apply(varset("pbxc-7-record", "Snoop/a-00000001", "PBXC_RECORDING", ""))
    assert (call.rows()["a"]["recording"], call.rows()["a"]["recording_paused"]) == ("", 0)
