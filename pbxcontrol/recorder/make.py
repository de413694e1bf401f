"""calls/make on the holder's side (SPEC §11.4): originate party 1 without Stasis into the
shipped `[pbxcontrol-make]` context (etc/asterisk/extensions_pbxcontrol.conf), which on answer
applies callerid2 and continues in the customer's dialling context at `cnumber`, dialling party
2. The ids are ours (`pbxc-<intent>-party1`, and `-party1b` for a Local party 1's second half),
so the API can answer them at once and the recorder lists them as real legs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pbxcontrol.ari.client import AriError
from pbxcontrol.db.intents import DONE, REFUSED, Claimed

if TYPE_CHECKING:  # actions.py registers this executor: no import cycle at run time
    from pbxcontrol.recorder.actions import ControlAri, Result

#: How long party 1 rings (SPEC §11.4: `[control] ring_seconds`).
RING_SECONDS = 30
#: Auto-answer for party 1 when `answer1=1`: the header most SIP phones honour (a common
#: practice, not an Asterisk feature); only PJSIP endpoints get it.
AUTO_ANSWER = {"PJSIP_HEADER(add,Call-Info)": "<sip:127.0.0.1>;answer-after=0"}


def make(ari: ControlAri, intent: Claimed) -> Result:
    p = intent.params
    party1 = f"pbxc-{intent.id}-party1"
    # PBX_* file the call under the customer from its first events (SPEC §4's overrides);
    # PBXC_* are for [pbxcontrol-make].
    variables = {
        "PBX_SCUSTOMER": p["customer"],
        "PBX_STYPE": p["stype"],
        "PBX_SNUMBER": p["snumber"],
        "PBX_CTYPE": p["ctype"],
        "PBX_CNUMBER": p["cnumber"],
        "PBXC_CONTEXT": p["context"],
        "PBXC_CALLERID2": p["callerid2"],
        "__PBXC_ANSWER2": p["answer2"],
    }
    if p.get("answer1") == "1" and p["endpoint"].startswith("PJSIP/"):
        variables |= AUTO_ANSWER
    params: dict[str, str] = {
        "context": "pbxcontrol-make",
        "extension": p["cnumber"],
        "priority": "1",
        "timeout": str(RING_SECONDS),
        "channelId": party1,
    }
    if p["endpoint"].startswith("Local/"):
        params["otherChannelId"] = f"pbxc-{intent.id}-party1b"
    if p.get("callerid1"):
        params["callerId"] = p["callerid1"]
    legs: list[list[Any]] = [[intent.machine, party1, "not tried"]]
    try:
        ari.originate(p["endpoint"], variables, **params)
    except AriError as exc:
        return REFUSED, 503, f"Asterisk on machine {intent.machine} refused: {exc}", legs, {}
    return DONE, 204, "", [[intent.machine, party1, "ringing"]], {"party1": party1}
