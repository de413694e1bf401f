"""calls/monitor on the holder's side (SPEC §11.6): ring the supervisor's phone into the shipped
`[pbxcontrol-monitor]` context, which on answer runs Asterisk's ChanSpy on the monitored leg
(`listen`; `w` whisper: heard by the chosen leg's own phone only; `B` barge: heard by both).

Why ChanSpy and not the SPEC's ARI snoop + mixing bridge: ChanSpy needs no channel of ours
besides the supervisor's (no snoop, no bridge, nothing to reconcile after a takeover: the
session is the supervisor's leg itself, running in the dialplan, and it ends with that leg or
with the monitored one — ChanSpy's `E`), and it works on any channel. The supervisor's leg is
listed as a call of its own: PBX_* file it under the supervisor's line, `dtype` `monitor`,
`dnumber` the monitored leg, `dcustomer` 0 (SPEC §11.8)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pbxcontrol.ari.client import AriError
from pbxcontrol.db.intents import DONE, REFUSED, Claimed

if TYPE_CHECKING:  # actions.py registers this executor: no import cycle at run time
    from pbxcontrol.recorder.actions import ControlAri, Result

RING_SECONDS = 30
AUTO_ANSWER = {"PJSIP_HEADER(add,Call-Info)": "<sip:127.0.0.1>;answer-after=0"}


def monitor(ari: ControlAri, intent: Claimed) -> Result:
    p, target = intent.params, intent.targets[0]
    supervisor = f"pbxc-{intent.id}-supervisor"
    variables = {
        "PBX_SCUSTOMER": p["customer"],
        "PBX_STYPE": "phone",
        "PBX_SNUMBER": p["snumber"],
        "PBX_CNUMBER": target,
        "PBX_DTYPE": "monitor",
        "PBX_DNUMBER": target,
        "PBX_DCUSTOMER": "0",
        "PBXC_SPY": p["spy"],
    }
    if p.get("answer") == "1" and p["endpoint"].startswith("PJSIP/"):
        variables |= AUTO_ANSWER
    legs: list[list[Any]] = [[intent.machine, target, "not tried"]]
    try:
        ari.originate(
            p["endpoint"],
            variables,
            context="pbxcontrol-monitor",
            extension=p["mode"],
            priority="1",
            timeout=str(RING_SECONDS),
            channelId=supervisor,
            callerId=f"Monitor <{p['snumber']}>",
        )
    except AriError as exc:
        return REFUSED, 503, f"Asterisk on machine {intent.machine} refused: {exc}", legs, {}
    return DONE, 200, "", [[intent.machine, target, "monitored"]], {"supervisor": supervisor}
