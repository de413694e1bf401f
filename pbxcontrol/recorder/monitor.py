"""calls/monitor on the holder's side (SPEC §11.6): ring the supervisor's phone into the shipped
`[pbxcontrol-monitor]` context, which on answer runs Asterisk's ChanSpy on the monitored leg
(`listen`; `w` whisper: heard by the chosen leg's own phone only; `B` barge: heard by both).

Why ChanSpy and not the SPEC's ARI snoop + mixing bridge: ChanSpy needs no channel of ours
besides the supervisor's (no snoop, no bridge: the session is the supervisor's leg itself,
running in the dialplan, ending with that leg or with the monitored one — ChanSpy's `E`), and
it works on any channel. The supervisor's leg is listed as a call of its own: PBX_* file it
under the supervisor's line, `dtype` `monitor`, `dnumber` the monitored leg, `dcustomer` 0
(SPEC §11.8).

Sessions are rows (SPEC §11.2 item 5, `call_controls` kind `monitor`: target leg, supervisor
leg, mode, state `starting` → `monitoring` → `ended`), written before the originate: a holder
killed at any point leaves a row naming the supervisor's leg, which the next holder keeps while
that channel lives and ends once it is gone (`reconcile`, then every `SWEEP` seconds).

A mode change (the same request with another mode, `params["session"]` = the supervisor's leg)
moves the supervisor's leg to the new mode's extension with ChannelRedirect, through the same
helper Local as calls/redirect (`monitor-mode@pbxcontrol-actions`): its ChanSpy ends, the new
one starts on the same leg. ChanSpy's own DTMF mode switch (option `d`) needs the digits to come
from the supervisor's phone; ARI's /dtmf sends them towards it, and answers 409 outside Stasis.

`announce` (the owning customer's `monitor_announce=1`): a beep whispered to the monitored leg
as the session starts, by a helper Local (ids pbxc-<intent>-tone/-toneb, plumbing) whose
second half runs ChanSpy(<leg>,qwS) — whisper: its audio goes to that leg's own phone — while
the first half plays `beep` and hangs up, which ends the helper."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.ari.client import AriError
from pbxcontrol.db import controls
from pbxcontrol.db.intents import DONE, REFUSED, Claimed
from pbxcontrol.recorder.actions import channel_redirect

if TYPE_CHECKING:
    from pbxcontrol.recorder.actions import ControlAri, Result

RING_SECONDS = 30
AUTO_ANSWER = {"PJSIP_HEADER(add,Call-Info)": "<sip:127.0.0.1>;answer-after=0"}
MODES = ("listen", "whisper", "barge")
KIND = "monitor"
#: Seconds between the holder's looks for sessions whose supervisor hung up.
SWEEP = 2.0
NOT_FOUND = "Call does not exist, or you do not have permission to view it"


@dataclass(frozen=True)
class Rows:
    """The monitoring sessions' rows of one machine, written under the claiming epoch."""

    sessions: sessionmaker[Session]
    machine: int
    epoch: int

    def running(self, uniqueid: str | None = None) -> list[controls.Session_]:
        with self.sessions() as session:
            return controls.running(session, self.machine, uniqueid, KIND)

    def open(self, target: str, supervisor: str, mode: str, intent: int) -> int:
        with self.sessions.begin() as session:
            return controls.open_session(
                session, self.machine, target, "", "", "", intent, self.epoch,
                kind=KIND, supervisor=supervisor, mode=mode,
            )  # fmt: skip

    def set(self, row_id: int, state: str, mode: str | None = None) -> None:
        with self.sessions.begin() as session:
            controls.set_state(session, row_id, state, self.epoch, mode)


def execute(ari: ControlAri, intent: Claimed, rows: Rows) -> Result:
    target = intent.targets[0]
    if intent.params.get("mode") not in MODES:
        return REFUSED, 400, f"unknown mode {intent.params.get('mode')!r}", [], {}
    try:
        if intent.params.get("session"):
            return _change(ari, intent, rows)
        return _start(ari, intent, rows)
    except AriError as exc:
        legs = [[intent.machine, target, "not tried"]]
        return REFUSED, 503, f"Asterisk on machine {intent.machine} refused: {exc}", legs, {}


def _start(ari: ControlAri, intent: Claimed, rows: Rows) -> Result:
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
    row = rows.open(target, supervisor, p["mode"], intent.id)  # before the leg exists
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
    except AriError:
        rows.set(row, controls.ENDED)
        raise
    rows.set(row, controls.MONITORING)
    created: dict[str, Any] = {"supervisor": supervisor}
    if p.get("announce") == "1":
        created["announced"] = announce(ari, intent.id, p["spy"])
    return DONE, 200, "", [[intent.machine, target, "monitored"]], created


def _change(ari: ControlAri, intent: Claimed, rows: Rows) -> Result:
    """Another mode for the supervisor's live session on the leg: 204 once moved."""
    p, target, machine = intent.params, intent.targets[0], intent.machine
    mine = [s for s in rows.running(target) if s.supervisor == p["session"]]
    if not mine:
        return REFUSED, 409, "no monitoring session of yours on the leg", [], {}
    row = mine[0]
    if row.mode == p["mode"]:
        return REFUSED, 409, "the leg is already monitored by you in this mode", [], {}
    status, found = ari.call("GET", f"/channels/{quote(row.supervisor, safe='')}")
    if status == 404:
        rows.set(row.id, controls.ENDED)
        return REFUSED, 404, NOT_FOUND, [[machine, row.supervisor, "gone"]], {}
    if status != 200:
        raise AriError(f"GET /channels/{row.supervisor}: HTTP {status}")
    if not isinstance(found, dict) or found.get("state") != "Up":
        return REFUSED, 409, "the supervisor's phone has not answered yet", [], {}
    variables = {"PBXC_TARGET": row.supervisor, "PBXC_MODE": p["mode"]}
    moved = channel_redirect(ari, intent.id, "monitor-mode", variables)
    if moved == "NOCHANNEL":
        rows.set(row.id, controls.ENDED)
        return REFUSED, 404, NOT_FOUND, [[machine, row.supervisor, "gone"]], {}
    if moved != "SUCCESS":
        message = f"Asterisk on machine {machine} did not confirm the mode change ({moved!r})"
        return REFUSED, 503, message, [], {}
    rows.set(row.id, controls.MONITORING, p["mode"])
    return DONE, 204, "", [[machine, target, p["mode"]]], {"supervisor": row.supervisor}


def announce(ari: ControlAri, intent: int, spy: str) -> bool:
    """The beep to the monitored leg's own phone (see the module's text); False when
    Asterisk refused it (the session runs all the same)."""
    try:
        ari.originate(
            "Local/tone@pbxcontrol-actions",
            {"PBXC_SPY": spy},
            context="pbxcontrol-actions",
            extension="whisper-tone",
            channelId=f"pbxc-{intent}-tone",
            otherChannelId=f"pbxc-{intent}-toneb",
            timeout="5",
        )
    except AriError:
        return False
    return True


def reconcile(ari: ControlAri, rows: Rows) -> tuple[int, int]:
    """The sessions' rows against Asterisk: (kept, ended). A row whose supervisor's leg lives
    is kept (adopted by this epoch); one whose leg is gone — hung up, or never originated by a
    holder killed before it — is ended. A new holder runs this first, then every SWEEP."""
    kept = ended = 0
    for row in rows.running():
        status, _ = ari.call("GET", f"/channels/{quote(row.supervisor, safe='')}")
        if status == 200:
            if row.epoch != rows.epoch or row.state != controls.MONITORING:
                rows.set(row.id, controls.MONITORING)
            kept += 1
        elif status == 404:
            rows.set(row.id, controls.ENDED)
            ended += 1
        else:
            raise AriError(f"GET /channels/{row.supervisor}: HTTP {status}")
    return kept, ended
