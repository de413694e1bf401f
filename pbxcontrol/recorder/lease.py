"""The lease on a machine (SPEC §10): who may record it, for how long, under which epoch.

The lease is the machine's row in `machines` (columns `holder`, `epoch`, `renewed_at`, migration
0011). Every time is the database's clock, so hosts need not agree on theirs: a holder renews
by writing `renewed_at = now`, a standby takes the row once `now - renewed_at` exceeds
the expiry (0.6 x `takeover_seconds`, so that the takeover, counted from the fault, fits in
`takeover_seconds`), by a compare-and-set on the epoch it read (two standbys: one UPDATE
matches, the other finds the epoch already moved). Every write of the holder starts with
`fence`: a check of its epoch in the same transaction as the write, so a holder that lost the
lease (hung, cut off, or started twice by mistake) commits nothing.

**A slow commit does not lose the lease** (issue 21: with fifty machines queued on one row,
write transactions ran past the lease, and recorders closed their websockets). The holder
renews on a connection and thread of its own (pbxcontrol/recorder/renewer.py), and trusts the
lease by its renewals, not by its data commits. On PostgreSQL the fence is `SELECT ... FOR KEY
SHARE` of the machine's row, and `(id, epoch)` is unique (migration 0016), so the epoch is a key
column: a taker's CAS, which changes the epoch, waits until the holder's fenced transactions
in flight have ended (then finds the lease renewed, or takes it and every later fence of the old
epoch fails), while a renewal, which changes `renewed_at` only, waits for none of them. SQLite
has one writer at a time: its fence is an UPDATE of the row, as before. The renewer renews only
while the writer thread shows progress, or waits on the database or Asterisk for less than
BUSY_SHARE x `takeover_seconds` (STALL_SHARE without progress): a writer that hangs still
loses its lease.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, NoReturn, cast

from sqlalchemy import (
    Connection,
    CursorResult,
    Update,
    and_,
    bindparam,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.orm import Session

from pbxcontrol.db.clock import db_now
from pbxcontrol.db.models import Base

log = logging.getLogger("pbxcontrol.recorder")
MACHINES = Base.metadata.tables["machines"]
#: A lease not renewed for this share of `takeover_seconds` is expired: with a standby polling
#: every tenth of it, a takeover (counted from the fault, not from the last renewal) then fits
#: in `takeover_seconds` with room for connecting to ARI and reconciling.
EXPIRY_SHARE = 0.6
#: The holder renews at least this often (3 renewals per lease: one lost write is no takeover).
RENEW_SHARE = 0.2
POLL_SHARE = 0.1
#: The holder trusts its lease for this share of the expiry after the start of its last
#: successful renewal (its own clock may run a little faster than the database's).
LOCAL_SHARE = 0.9
#: A writer that shows no progress for this share of `takeover_seconds` (it marks each event
#: it applies), or waits BUSY_SHARE of it on one call (a commit, a lock, Asterisk's REST API),
#: is taken for hung: its lease is no longer renewed. Not less: a recorder starved of CPU (a
#: busy host) is alive, and must not lose its lease for applying a batch slowly.
STALL_SHARE, BUSY_SHARE = 1.0, 6.0


class LeaseLost(Exception):
    """The machine's lease now belongs to another epoch: this transaction must not commit."""


@dataclass(frozen=True)
class Holder:
    """Who holds a machine's lease as a standby last saw it."""

    holder: str
    epoch: int
    age: float  # seconds since its last renewal, by the database's clock


#: PostgreSQL's fence: the limits of the transaction (`Lease._limits`), and a key-share lock
#: on the machine's row at the holder's epoch; no row: the lease is gone. The recorder's leg
#: writes run it inside their first statement (pbxcontrol/db/legwrites.py `record_fenced`).
FENCE_POSTGRESQL = text(
    "SELECT set_config('idle_in_transaction_session_timeout', :f_idle, true),"
    " set_config('lock_timeout', :f_wait, true)"
    " FROM machines WHERE id = :f_machine AND epoch = :f_epoch FOR KEY SHARE"
)


@functools.cache
def _fence_statement(dialect: str) -> Update:
    """The fence's UPDATE on SQLite, built once: it starts every transaction of the holder, and
    building it (and its cache key) each time cost as much as running it."""
    return (
        update(MACHINES)
        .where(
            and_(MACHINES.c.id == bindparam("f_machine"), MACHINES.c.epoch == bindparam("f_epoch"))
        )
        .values(renewed_at=db_now(dialect))
    )


class Lease:
    """This process's claim on one machine. `epoch` is None while it does not hold it."""

    def __init__(self, machine: int, holder: str, takeover: float, name: str = ""):
        self.machine = machine
        self.holder = holder
        self.takeover = takeover
        self.name = name or f"machine {machine}"
        self.epoch: int | None = None
        self._valid_until = 0.0  # monotonic: surely ours until then (see `valid`)
        self._suspected_at = 0.0  # monotonic: renewals begun before it do not count
        self.seen: Holder | None = None  # the other holder, while standing by
        self.wanted = threading.Event()  # the renewer renews at once when set
        self._progress_at = 0.0  # monotonic: the writer's last sign of life
        self._busy_since: float | None = None  # monotonic: the writer waits on a call since
        self._revoked = False  # a renewal found another epoch

    @property
    def expiry(self) -> float:
        """Seconds without renewal after which a standby takes the lease."""
        return self.takeover * EXPIRY_SHARE

    @property
    def renew_interval(self) -> float:
        return self.takeover * RENEW_SHARE

    @property
    def poll_interval(self) -> float:
        """How often a standby looks at the lease."""
        return self.takeover * POLL_SHARE

    def valid(self) -> bool:
        """Held, and renewed recently enough that no standby can have taken it yet: the
        reader connects to ARI only then (a hung or cut-off holder closes its websocket)."""
        return self.epoch is not None and time.monotonic() < self._valid_until

    def doubted_for(self) -> float:
        """Seconds since the lease stopped being trusted (0 while it is): renewals late (a
        starved host, a slow database) or failing (no database)."""
        if self.epoch is None:
            return float("inf")
        return max(0.0, time.monotonic() - self._valid_until)

    def revoke(self) -> None:
        """A renewal found another epoch: the lease is gone (the writer's next fence says so)."""
        self._valid_until = 0.0
        self._revoked = True

    @property
    def revoked(self) -> bool:
        return self._revoked

    def confirmed(self, started: float) -> None:
        """A renewal begun at `started` (monotonic) has committed (recorder/renewer.py)."""
        if self.epoch is not None and started > self._suspected_at:
            self._valid_until = max(self._valid_until, started + self.expiry * LOCAL_SHARE)

    def suspect(self) -> None:
        """Trust the lease again only after a renewal begun from now on (any thread)."""
        self._suspected_at = time.monotonic()
        self._valid_until = 0.0
        self.wanted.set()

    # -- the writer's signs of life, for the renewer ------------------------------------------
    def progress(self) -> None:
        """The writer thread is going round its loop."""
        self._progress_at = time.monotonic()

    @contextmanager
    def busy(self) -> Iterator[None]:
        """The writer waits on the database or Asterisk for the duration."""
        self._busy_since = time.monotonic()
        try:
            yield
        finally:
            self._busy_since = None
            self._progress_at = time.monotonic()

    def writer_alive(self) -> bool:
        """Renew only for a writer that is alive: going round, or waiting (not for ever)."""
        now, busy = time.monotonic(), self._busy_since
        if busy is not None:
            return now - busy < self.takeover * BUSY_SHARE
        return now - self._progress_at < self.takeover * STALL_SHARE

    def forget(self) -> None:
        self.epoch = None
        self._valid_until = 0.0
        self._revoked = False

    # -- SQL, each in the caller's transaction --------------------------------------------
    def try_acquire(self, session: Session) -> bool:
        """Take the lease if it is free, released or expired (compare-and-set on the epoch
        read). True when this process now holds it, at a new epoch."""
        started = time.monotonic()
        dialect = session.get_bind().dialect.name
        self._limit_waits(session)
        now = db_now(dialect)
        row = session.execute(
            select(
                MACHINES.c.holder, MACHINES.c.epoch, (now - MACHINES.c.renewed_at).label("age")
            ).where(MACHINES.c.id == self.machine)
        ).first()
        if row is None:
            return False  # `ensure_row` first
        if row.holder and row.age <= self.expiry:
            self.seen = Holder(row.holder, row.epoch, float(row.age))
            return False
        done = session.execute(
            update(MACHINES)
            .where(
                MACHINES.c.id == self.machine,
                MACHINES.c.epoch == row.epoch,
                or_(MACHINES.c.holder == "", MACHINES.c.renewed_at < now - self.expiry),
            )
            .values(epoch=MACHINES.c.epoch + 1, holder=self.holder, renewed_at=now, connected=False)
        )
        if cast(CursorResult[Any], done).rowcount != 1:
            return False  # another standby won the same epoch
        previous = self.seen.holder if self.seen else row.holder
        self.epoch, self.seen = row.epoch + 1, None
        self._valid_until = started + self.expiry * LOCAL_SHARE
        self._progress_at = time.monotonic()
        log.info(
            "%s: took the lease (epoch %d)%s",
            self.name,
            self.epoch,
            f" from {previous}, silent for {row.age:.1f} s" if previous else "",
        )
        return True

    def ensure_row(self, session: Session, name: str) -> None:
        """Insert the machine's row if no process ever recorded it (two at once: one does)."""
        if session.get_bind().dialect.name == "sqlite":
            ignore = insert(MACHINES).prefix_with("OR IGNORE")
        else:
            from sqlalchemy.dialects.postgresql import insert as pg_insert

            ignore = pg_insert(MACHINES).on_conflict_do_nothing()
        session.execute(ignore.values(id=self.machine, name=name))

    def fence(self, session: Session) -> bool:
        """Check the lease as the first statement of a write transaction; LeaseLost when
        it belongs to another epoch (the caller's transaction must roll back). True when the
        fence renewed it too (SQLite's UPDATE: `confirmed` once the transaction commits)."""
        params = self.fence_params()
        if session.get_bind().dialect.name == "postgresql":  # one round trip with the limits
            held = session.execute(FENCE_POSTGRESQL, params).first() is not None
        else:
            done = session.execute(_fence_statement("sqlite"), params)
            held = cast(CursorResult[Any], done).rowcount == 1
        if not held:
            self.lost(session.connection())
        return session.get_bind().dialect.name != "postgresql"

    def fence_params(self) -> dict[str, Any]:
        """The fence's parameters (`FENCE_POSTGRESQL`'s; SQLite's use the first two);
        LeaseLost while not holding it."""
        if self.epoch is None:
            raise LeaseLost(f"{self.name}: not holding the lease")
        idle, wait = self._limits()
        return {"f_machine": self.machine, "f_epoch": self.epoch, "f_idle": idle, "f_wait": wait}

    def lost(self, conn: Connection) -> NoReturn:
        """A fence in `conn`'s transaction found another epoch: forget the lease and raise
        LeaseLost, saying who holds it now."""
        row = conn.execute(
            select(MACHINES.c.holder, MACHINES.c.epoch).where(MACHINES.c.id == self.machine)
        ).first()
        lost = self.epoch
        self.forget()
        raise LeaseLost(
            f"{self.name}: lost the lease (epoch {lost}) to "
            + (f"{row.holder or 'nobody'} (epoch {row.epoch})" if row else "nobody")
        )

    def release(self, session: Session) -> None:
        """Give the lease up at a clean stop: a standby takes it at once (no holder). The
        release counts as the last renewal: a restart within 2 x takeover_seconds leaves the
        machine's legs recorded, and forget_seconds count from here (SPEC §12)."""
        if self.epoch is not None:
            session.execute(
                update(MACHINES)
                .where(MACHINES.c.id == self.machine, MACHINES.c.epoch == self.epoch)
                .values(
                    holder="",
                    renewed_at=db_now(session.get_bind().dialect.name),
                    connected=False,
                )
            )
        self.forget()

    def _limits(self) -> tuple[str, str]:
        """PostgreSQL, (idle, lock wait) in ms: a holder stopped inside a transaction keeps its
        fence on the row, and a standby's CAS waits for it: the server ends such a transaction
        after the expiry idle (the lease, no longer renewed by a stopped process, has expired
        by then too: the takeover still fits in `takeover_seconds`), and nobody waits on a lock
        longer than the expiry. Idle means waiting for this process: a transaction queued on
        the server is not idle, and the recorder builds its rows before it begins."""
        return str(max(1000, int(self.expiry * 1000))), str(int(self.expiry * 1000))

    def _limit_waits(self, session: Session) -> None:
        """`_limits` for a transaction that does not start with the fence."""
        if session.get_bind().dialect.name == "postgresql":
            idle, wait = self._limits()
            session.execute(
                text(
                    "SELECT set_config('idle_in_transaction_session_timeout', :idle, true),"
                    " set_config('lock_timeout', :wait, true)"
                ),
                {"idle": str(idle), "wait": str(wait)},
            )
