"""Recording and monitoring sessions as rows (SPEC §11.2 item 5, table `call_controls`): the holder
of a machine's lease writes a row before it creates anything in Asterisk (state `starting`),
keeps its state (`recording`, `paused`) and ends it (`ended`); the next holder reconciles the
rows that are not `ended` with Asterisk (recorder/recording.py), so a takeover in the middle of
a recording neither loses it (the row names the snoop and the recording to stop) nor starts a
second one (the row says one runs). A monitoring session (kind `monitor`, recorder/monitor.py)
names its target leg, the supervisor's leg and the mode, states `starting`, `monitoring`,
`ended`."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import Base

CONTROLS = Base.metadata.tables["call_controls"]
LEGS = Base.metadata.tables["legs"]
STARTING, RECORDING, PAUSED, ENDED = "starting", "recording", "paused", "ended"
MONITORING = "monitoring"
STATES = (STARTING, RECORDING, PAUSED, MONITORING, ENDED)
RUNNING = (STARTING, RECORDING, PAUSED, MONITORING)


@dataclass(frozen=True)
class Session_:
    """One row, as the holder reads it."""

    id: int
    machine: int
    uniqueid: str
    snoop: str
    name: str
    path: str
    state: str
    epoch: int
    supervisor: str = ""  # kind monitor: the supervisor's leg
    mode: str = ""  # kind monitor: listen, whisper, barge


def running(
    session: Session, machine: int, uniqueid: str | None = None, kind: str = "record"
) -> list[Session_]:
    """The machine's sessions of `kind` not ended (of one leg when `uniqueid` is given)."""
    c = CONTROLS.c
    query = select(CONTROLS).where(c.machine == machine, c.kind == kind, c.state.in_(RUNNING))
    if uniqueid is not None:
        query = query.where(c.uniqueid == uniqueid)
    rows = session.execute(query.order_by(c.id)).all()
    return [
        Session_(
            *(r.id, r.machine, r.uniqueid, r.snoop, r.name, r.path, r.state, r.epoch),
            *(r.supervisor, r.mode),
        )
        for r in rows
    ]


def open_session(
    session: Session, machine: int, uniqueid: str, snoop: str, name: str, path: str, intent: int,
    epoch: int, kind: str = "record", supervisor: str = "", mode: str = "",
) -> int:  # fmt: skip
    """A row `starting`, written (and committed by the caller) before the snoop (or the
    supervisor's leg) exists."""
    values = {
        "machine": machine,
        "kind": kind,
        "supervisor": supervisor,
        "mode": mode,
        "uniqueid": uniqueid,
        "snoop": snoop,
        "name": name,
        "path": path,
        "state": STARTING,
        "intent_id": intent,
        "epoch": epoch,
        "started": db_now(session.get_bind().dialect.name),
    }
    key = session.connection().execute(insert(CONTROLS).values(**values)).inserted_primary_key
    assert key is not None
    return int(key[0])


def set_state(
    session: Session, row_id: int, state: str, epoch: int, mode: str | None = None
) -> None:
    values: dict[str, object] = {"state": state, "epoch": epoch}
    if mode is not None:
        values["mode"] = mode
    if state == ENDED:
        values["ended"] = db_now(session.get_bind().dialect.name)
    session.execute(update(CONTROLS).where(CONTROLS.c.id == row_id).values(**values))


def orphaned(session: Session, machine: int) -> list[Session_]:
    """Sessions not ended whose target leg is no longer live: the recording ended with it."""
    sessions = running(session, machine)
    if not sessions:
        return []
    ids = {s.uniqueid for s in sessions}
    live = select(LEGS.c.uniqueid).where(LEGS.c.machine == machine, LEGS.c.uniqueid.in_(ids))
    alive = set(session.scalars(live))
    return [s for s in sessions if s.uniqueid not in alive]


def foreign_recording(session: Session, machine: int, uniqueid: str) -> str:
    """The recording the list shows on a leg when it is none of ours (a MixMonitor the
    dialplan started, SPEC §11.5: shown, not ours to stop), else ""."""
    lg, c = LEGS.c, CONTROLS.c
    where = (lg.machine == machine, lg.uniqueid == uniqueid)
    shown = session.scalar(select(lg.recording).where(*where)) or ""
    if not shown:
        return ""
    ours = select(c.id).where(c.machine == machine, c.uniqueid == uniqueid, c.path == shown)
    return "" if session.scalar(ours.limit(1)) is not None else shown
