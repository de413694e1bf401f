"""Recording by the holder of a machine's lease (SPEC §11.5): recording/recordings/start, stop
and pause as intent executors, and the reconciliation of the sessions' rows after a takeover
(SPEC §11.2 item 5, pbxcontrol/db/controls.py).

ARI's `/record` answers 409 on a channel outside Stasis (FACTS.md), so: a snoop (`spy=both`,
both directions mixed) on the leg into our application, id `pbxc-<intent>-record` (plumbing,
never listed), then `POST /channels/{snoop}/record` once the snoop is in Stasis (until then it
answers 409: retried for `READY_WAIT`); pause, unpause and stop through
`/recordings/live/{name}`; `stop` hangs the snoop up (Asterisk ends a snoop only with its
target). The list learns of it from the executor itself (`Rows.note`: a `Recorded` into the
writer's queue, recorder/live.py): ARI sends no event for a pause, and a variable set on the
snoop — the first design — waits on the real Asterisk until the recording ends (a Stasis
channel runs its commands one at a time, and the recording is one), so the list never showed
it and every request waited for the ARI client's timeout.

Every session is a row written before the snoop exists, so a holder killed at any point leaves
a row naming what to find: the next holder keeps what still runs and ends what is orphaned.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.ari.client import AriError
from pbxcontrol.db import controls
from pbxcontrol.db.intents import DONE, REFUSED, Claimed
from pbxcontrol.recorder.leg import Recorded

log = logging.getLogger("pbxcontrol.recorder")
Result = tuple[str, int, str, list[list[Any]], dict[str, Any]]
NOT_FOUND = "Call does not exist, or you do not have permission to view it"
#: How long the holder retries the record while the new snoop is not yet in Stasis.
READY_WAIT, READY_POLL = 1.0, 0.02
#: Seconds between the holder's looks for sessions whose leg ended (their recording with it).
SWEEP = 10.0
FUNCTIONS = ("record_start", "record_stop", "record_pause")
NO_DIRECTORY = (
    "Asterisk on machine {machine} cannot write recordings: its recording directory "
    "(astspooldir/recording) is missing or not writable"
)


class RecordAri(Protocol):
    app: str

    def call(self, method: str, path: str, **params: str) -> tuple[int, Any]: ...


@dataclass(frozen=True)
class Rows:
    """The sessions' rows of one machine, written under the epoch that claimed the intent."""

    sessions: sessionmaker[Session]
    machine: int
    epoch: int
    note: Callable[[Recorded], None] = lambda news: None  # to the writer (the list)

    def running(self, uniqueid: str | None = None) -> list[controls.Session_]:
        with self.sessions() as session:
            return controls.running(session, self.machine, uniqueid)

    def open(self, uniqueid: str, snoop: str, name: str, path: str, intent: int) -> int:
        with self.sessions.begin() as session:
            m, e = self.machine, self.epoch
            return controls.open_session(session, m, uniqueid, snoop, name, path, intent, e)

    def foreign(self, uniqueid: str) -> str:
        with self.sessions() as session:
            return controls.foreign_recording(session, self.machine, uniqueid)

    def set(self, row_id: int, state: str) -> None:
        with self.sessions.begin() as session:
            controls.set_state(session, row_id, state, self.epoch)

    def sweep(self) -> int:
        """Sessions whose target leg is no longer live are ended (Asterisk ended the snoop
        and its recording with the leg). Returns how many."""
        with self.sessions.begin() as session:
            gone = controls.orphaned(session, self.machine)
            for row in gone:
                controls.set_state(session, row.id, controls.ENDED, self.epoch)
        return len(gone)


def execute(ari: RecordAri, intent: Claimed, rows: Rows) -> Result:
    target = intent.targets[0]
    legs: list[list[Any]] = [[intent.machine, target, "not tried"]]
    try:
        found = [s for s in rows.running(target) if _alive(ari, rows, s)]
        if intent.function == "record_start":
            return _start(ari, intent, rows, found[0] if found else None)
        if not found:
            return REFUSED, 409, "the leg is not being recorded by us", legs, {}
        if intent.function == "record_stop":
            return _stop(ari, rows, found[0], intent.machine)
        return _pause(ari, rows, found[0], intent.machine)
    except AriError as exc:
        return REFUSED, 503, f"Asterisk on machine {intent.machine} did not answer: {exc}", legs, {}


def _start(ari: RecordAri, intent: Claimed, rows: Rows, running: Any) -> Result:
    target, p, machine = intent.targets[0], intent.params, intent.machine
    if running is not None:
        return _unpause(ari, rows, running, machine)
    if rows.foreign(target):  # a MixMonitor of the dialplan: one recording is enough
        legs = [[machine, target, "recording"]]
        return REFUSED, 409, "the leg is already being recorded by the dialplan", legs, {}
    day = time.strftime("%Y/%m/%d", time.gmtime())
    name = f"{p.get('customer', '0')}/{day}/{target}-{intent.id}"
    fmt = p.get("format", "wav")
    path = f"{p.get('directory', '/var/spool/asterisk/recording').rstrip('/')}/{name}.{fmt}"
    snoop = f"pbxc-{intent.id}-record"
    row = rows.open(target, snoop, name, path, intent.id)  # before anything exists in Asterisk
    status, _ = ari.call(
        "POST", f"/channels/{quote(target, safe='')}/snoop", spy="both", app=ari.app, snoopId=snoop
    )
    if status == 404:
        rows.set(row, controls.ENDED)
        return REFUSED, 404, NOT_FOUND, [[machine, target, "gone"]], {}
    if status != 200:
        rows.set(row, controls.ENDED)
        return (
            REFUSED,
            503,
            f"Asterisk on machine {machine} refused the snoop (HTTP {status})",
            [],
            {},
        )
    status = _record(ari, snoop, name, fmt)
    if status not in (200, 201):  # 201 Created, the LiveRecording
        _quietly_hang_up(ari, snoop)
        rows.set(row, controls.ENDED)
        if status == 500:
            return REFUSED, 503, NO_DIRECTORY.format(machine=machine), [], {}
        return (
            REFUSED,
            503,
            f"Asterisk on machine {machine} refused the recording (HTTP {status})",
            [],
            {},
        )
    rows.set(row, controls.RECORDING)
    rows.note(Recorded(target, path, True))
    created = {"snoop": snoop, "recording": path}
    return DONE, 204, "", [[machine, target, "recording"]], created


def _unpause(ari: RecordAri, rows: Rows, running: controls.Session_, machine: int) -> Result:
    """start on a leg we record: "Starts/unpauses" (Enswitch 4.1); 409 unless paused."""
    if running.state != controls.PAUSED:
        legs = [[machine, running.uniqueid, "recording"]]
        return REFUSED, 409, "the leg is already being recorded", legs, {}
    _live(ari, running.name, "DELETE", "/pause")
    rows.set(running.id, controls.RECORDING)
    rows.note(Recorded(running.uniqueid, running.path, True))
    return DONE, 204, "", [[machine, running.uniqueid, "unpaused"]], {"recording": running.path}


def _record(ari: RecordAri, snoop: str, name: str, fmt: str) -> int:
    """POST /channels/{snoop}/record, again while the snoop is not yet in Stasis (409)."""
    deadline = time.monotonic() + READY_WAIT
    while True:
        status, _ = ari.call(
            "POST", f"/channels/{snoop}/record", name=name, format=fmt, ifExists="fail"
        )
        if status != 409 or time.monotonic() >= deadline:
            return int(status)
        time.sleep(READY_POLL)


def _stop(ari: RecordAri, rows: Rows, running: controls.Session_, machine: int) -> Result:
    _live(ari, running.name, "POST", "/stop")
    _quietly_hang_up(ari, running.snoop)
    rows.set(running.id, controls.ENDED)
    rows.note(Recorded(running.uniqueid, running.path, False))
    return DONE, 204, "", [[machine, running.uniqueid, "stopped"]], {"recording": running.path}


def _pause(ari: RecordAri, rows: Rows, running: controls.Session_, machine: int) -> Result:
    if running.state == controls.RECORDING:
        _live(ari, running.name, "POST", "/pause")
        rows.set(running.id, controls.PAUSED)
        rows.note(Recorded(running.uniqueid, running.path, True, paused=1))
    return DONE, 204, "", [[machine, running.uniqueid, "paused"]], {"recording": running.path}


def _alive(ari: RecordAri, rows: Rows, row: controls.Session_) -> bool:
    """Whether a session's recording still runs; a row whose recording ended (with its leg,
    or a holder killed before it began) is ended here, its snoop hung up."""
    status, answer = ari.call("GET", f"/recordings/live/{quote(row.name, safe='')}")
    if (
        status == 200
        and isinstance(answer, dict)
        and answer.get("state") in ("queued", "recording", "paused")
    ):
        state = controls.PAUSED if answer["state"] == "paused" else controls.RECORDING
        if state != row.state or row.epoch != rows.epoch:  # adopted by this holder
            rows.set(row.id, state)
        # Again (nothing is written when the list shows it already): a holder killed after
        # its ARI call and before its writer wrote would otherwise leave the list behind.
        rows.note(Recorded(row.uniqueid, row.path, True, int(state == controls.PAUSED)))
        return True
    if status not in (200, 404):  # 404 (or done): its leg ended, or a holder was killed
        raise AriError(f"GET /recordings/live: HTTP {status}")  # before the record
    _quietly_hang_up(ari, row.snoop)
    rows.set(row.id, controls.ENDED)
    rows.note(Recorded(row.uniqueid, row.path, False))
    return False


def reconcile(ari: RecordAri, rows: Rows) -> tuple[int, int]:
    """A new holder's look at the sessions an earlier one left: (still running, ended)."""
    kept = ended = 0
    for row in rows.running():
        if _alive(ari, rows, row):
            kept += 1
        else:
            ended += 1
    return kept, ended


def _live(ari: RecordAri, name: str, method: str, tail: str) -> None:
    status, _ = ari.call(method, f"/recordings/live/{quote(name, safe='')}{tail}")
    if status not in (200, 204, 404, 409):  # 404: it ended meanwhile, 409: already so
        raise AriError(f"{method} /recordings/live{tail}: HTTP {status}")


def _quietly_hang_up(ari: RecordAri, channel: str) -> None:
    with contextlib.suppress(AriError):
        ari.call("DELETE", f"/channels/{channel}")
