"""The holder's side of call control (SPEC §11.2): a thread per machine that, while this
process holds the machine's lease, claims the intents the API wrote (pbxcontrol/db/intents.py),
carries them out over ARI REST (recorder/actions.py) and writes their outcomes.

Claims are fenced by the lease: the claim's transaction starts with `Lease.fence` (PostgreSQL:
a key-share lock on the machine's row, so a takeover waits for it; SQLite: the one writer), and
the claim itself is a compare-and-set on the intent's state, so each intent runs at most once,
also across a takeover: a new epoch first marks what an older one claimed and did not finish
`unknown` (`orphan`), never runs it.

Scheduled intents (calls/make's `delay`) are claimed once due; the worker sleeps no longer than
until the next one is due.

Wake-ups: the `Doorbell` event of this process (an API in the same process, `serve`), and on
PostgreSQL a LISTEN on the intents' channel (the API's `pg_notify` is delivered at its commit):
only the rare transactions that write an intent notify, never the recorders' ingest, so
PostgreSQL's serialisation of notifying commits costs the fleet nothing. Polling every
`POLL_SQLITE` (SQLite: no notifications between processes) or `POLL_POSTGRESQL` (a safety net for
a notification lost while the listening connection was down) does the rest.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.ari.client import AriError
from pbxcontrol.db import intents
from pbxcontrol.db.outage import is_outage
from pbxcontrol.recorder import monitor, recording
from pbxcontrol.recorder.actions import ControlAri, Result, execute
from pbxcontrol.recorder.lease import Lease, LeaseLost
from pbxcontrol.recorder.leg import Recorded

log = logging.getLogger("pbxcontrol.recorder")
POLL_SQLITE, POLL_POSTGRESQL = 0.1, 1.0
T = TypeVar("T")


class IntentWorker:
    """One machine's intents, carried out while `holding` is set and the lease has an epoch."""

    def __init__(
        self,
        machine: int,
        ari: ControlAri,
        sessions: sessionmaker[Session],
        lease: Lease,
        holding: threading.Event,
        stopping: threading.Event,
        wake: threading.Event,
        name: str = "",
        note: Callable[[Recorded], None] | None = None,
    ):
        self.machine, self.ari, self.sessions = machine, ari, sessions
        # What our recordings of legs are now, to the writer (the list: recorder/live.py).
        self.note: Callable[[Recorded], None] = note or (lambda news: None)
        self.lease, self.holding, self.stopping, self.wake = lease, holding, stopping, wake
        self.name = name or f"machine {machine}"
        self._epoch: int | None = None  # the epoch whose orphans were marked
        self.carried = 0  # intents carried out by this process
        self._next_sweep = 0.0  # monotonic: when to end the sessions whose leg ended
        self._next_monitors = 0.0  # monotonic: when to end those whose supervisor hung up

    @property
    def poll(self) -> float:
        dialect = self.sessions.kw["bind"].dialect.name
        return POLL_POSTGRESQL if dialect == "postgresql" else POLL_SQLITE

    def run(self) -> None:
        """The worker thread, until a stop."""
        poll = wait = self.poll
        while not self.stopping.is_set():
            self.wake.wait(wait)
            self.wake.clear()
            wait, epoch = poll, self.lease.epoch
            if not self.holding.is_set() or epoch is None:
                continue
            try:
                self.round(epoch)
                wait = self._until_due(poll)
            except LeaseLost:
                continue  # the writer's own fence stands the recording by
            except Exception as exc:  # the database is down, or a bug: the next round retries
                if is_outage(exc):  # one line, as every other wait for the database logs
                    log.warning("%s: call-control intents wait for the database (%s)",
                                self.name, str(exc).splitlines()[0])  # fmt: skip
                else:
                    log.exception("%s: carrying out call-control intents failed", self.name)
                self.stopping.wait(poll)

    def round(self, epoch: int) -> int:
        """Claim what is pending and carry it out; how many were claimed."""
        if self._epoch != epoch:
            gone = self._fenced(lambda s: intents.orphan(s, self.machine, epoch), epoch)
            if gone:
                log.warning("%s: %d intents of the previous holder marked unknown", self.name, gone)
            self._reconcile(epoch)
            self._epoch = epoch
        if time.monotonic() >= self._next_sweep:  # a recording ends by itself with its leg
            recording.Rows(self.sessions, self.machine, epoch, self.note).sweep()
            self._next_sweep = time.monotonic() + recording.SWEEP
        if time.monotonic() >= self._next_monitors:  # a session ends with the supervisor's leg
            self._next_monitors = time.monotonic() + monitor.SWEEP
            try:
                monitor.reconcile(self.ari, monitor.Rows(self.sessions, self.machine, epoch))
            except AriError as exc:  # Asterisk away: the intents still get their 503s
                log.warning("%s: monitoring sessions not checked (%s)", self.name, exc)
        # One at a time: each is claimed just before it runs, so one that waited behind a
        # slow Asterisk call is claimed late, and expires instead of running late.
        count = 0
        while not self.stopping.is_set():
            with self.sessions() as session:  # a read: most polls find nothing, and write nothing
                if not intents.pending(session, self.machine):
                    return count
            claimed = self._fenced(lambda s: intents.claim(s, self.machine, epoch), epoch)
            if not claimed:
                return count
            result = self._carry_out(claimed[0], epoch)
            self._finish(claimed[0].id, epoch, result)
            self.carried, count = self.carried + 1, count + 1
        return count

    def _until_due(self, poll: float) -> float:
        """How long to sleep: the poll, or less when a scheduled intent (calls/make's `delay`)
        is due sooner, so it runs on time rather than up to a poll late. A poll of 100 ms
        (SQLite) is on time enough: that read is spared."""
        if poll <= POLL_SQLITE:
            return poll
        with self.sessions() as session:
            due = intents.due_in(session, self.machine)
        return poll if due is None else min(poll, max(due, 0.005))

    def _finish(self, intent_id: int, epoch: int, result: Result) -> None:
        """The outcome, tried a few times: the action happened, and its row must say so (a
        row left `claimed` is answered 204, asynchronous, and stays so)."""
        for attempt in range(3):
            try:
                with self.sessions.begin() as session:
                    intents.finish(session, intent_id, epoch, result)
                return
            except Exception:
                if attempt == 2:
                    log.exception(
                        "%s: intent %d done, its outcome not written", self.name, intent_id
                    )
                else:
                    self.stopping.wait(0.2 * (attempt + 1))

    def _reconcile(self, epoch: int) -> None:
        """The recording sessions an earlier holder (or this process before a restart) left
        (SPEC §11.2 item 5): what still runs is kept, what is orphaned is ended."""
        rows = recording.Rows(self.sessions, self.machine, epoch, self.note)
        kept, ended = recording.reconcile(self.ari, rows)
        if kept or ended:
            log.warning(
                "%s: recording sessions taken over: %d kept, %d ended", self.name, kept, ended
            )
        kept, ended = monitor.reconcile(self.ari, monitor.Rows(self.sessions, self.machine, epoch))
        self._next_monitors = time.monotonic() + monitor.SWEEP
        if kept or ended:
            log.warning(
                "%s: monitoring sessions taken over: %d kept, %d ended", self.name, kept, ended
            )

    def _carry_out(self, intent: intents.Claimed, epoch: int) -> Result:
        mine = (self.machine, epoch)
        try:
            if intent.function in recording.FUNCTIONS:
                rows = recording.Rows(self.sessions, self.machine, epoch, self.note)
                return recording.execute(self.ari, intent, rows)
            if intent.function == monitor.KIND:
                return monitor.execute(self.ari, intent, monitor.Rows(self.sessions, *mine))
            return execute(self.ari, intent)
        except Exception as exc:  # a bug in an executor: the intent is answered all the same
            log.exception("%s: %s failed", self.name, intent.function)
            return intents.REFUSED, 503, f"{intent.function} failed: {type(exc).__name__}", [], {}

    def _fenced(self, work: Callable[[Session], T], epoch: int) -> T:
        """`work` in a transaction that holds only while `epoch` holds the lease. Not
        `Lease.fence`: that one is the writer's (it forgets a lost lease, and on SQLite it
        renews — a worker polling here must never keep a hung writer's lease alive)."""
        with self.sessions.begin() as session:
            if not intents.fence(session, self.machine, epoch):
                raise LeaseLost(f"{self.name}: the lease is no longer epoch {epoch}")
            return work(session)


def listen(url: str, on_machine: Callable[[int], None], stopping: threading.Event) -> None:
    """PostgreSQL: LISTEN on the intents' channel and call `on_machine` with each notified
    machine id, until a stop; reconnects after a failure (polling covers the gap)."""
    import psycopg
    from sqlalchemy.dialects.postgresql.psycopg import PGDialect_psycopg

    # The dialect's own reading of the URL: a multi-host URL's hosts and ports as libpq takes
    # them (a string DSN would keep "host:port" as one host name), and the primary only
    # (a standby cannot LISTEN, and the NOTIFY is sent on the primary).
    cargs, cparams = PGDialect_psycopg().create_connect_args(make_url(url))
    cparams = {"connect_timeout": 5, "target_session_attrs": "read-write", **cparams}
    while not stopping.is_set():
        try:
            with psycopg.connect(*cargs, autocommit=True, **cparams) as conn:
                conn.execute(f"LISTEN {intents.CHANNEL}")
                while not stopping.is_set():
                    for note in conn.notifies(timeout=1.0):
                        if note.payload.isdigit():
                            on_machine(int(note.payload))
        except psycopg.Error as exc:
            log.warning("listening for call-control intents failed (%s); polling", exc)
            stopping.wait(2.0)


def start_listening(url: str, bell: intents.Doorbell) -> threading.Event:
    """`listen` on a thread of its own, ringing `bell`; set the returned event to stop it."""
    stopping = threading.Event()
    thread = threading.Thread(
        target=listen, args=(url, bell.ring, stopping), name="intents", daemon=True
    )
    thread.start()
    return stopping
