"""PostgreSQL: the change journal's head in commit order, without a row every writer updates.

Writers take journal ids from a sequence (`leg_changes_ids`, CACHE 1), which hands them out
without waiting, in the order they are asked for, not in the order their transactions commit:
ids 10 and 11 can commit 11 first. A reader that passed 11 would never see 10. So a reader only
goes up to a *horizon*: an id below which every id that will ever commit has committed.

**How a reader knows one.** Every writer (`pbx_journal_append`, migration 0016), in its
transaction, first takes a shared advisory lock of the class JOURNAL_CLASS (shared: writers
never wait for each other), then its ids. The lock shows in `pg_locks` under the transaction's
virtual id until the transaction ends. A reader (`pbx_journal_probe`, one call) reads
L = the last id the sequence handed out, *then* W = the virtual ids holding such a lock in this
database (pg_locks shows the whole server's; migration 0025).

- Every id <= L was taken before L was read, by a transaction that had marked itself before
  that, so when W is read that transaction is either in W or over.
- A virtual transaction id (backend, local counter) is never reused by a later transaction. So
  once none of W holds the lock any more (a later probe sees none of them), every transaction
  that may hold an id <= L is over; and PostgreSQL releases a transaction's locks only after its
  commit is visible to new snapshots (`ProcArrayEndTransaction` comes before the locks are
  released), so a read after that probe sees every committed id <= L. L is then the horizon.
- If W is empty, L is the horizon at once (the quiet case: one probe).

A Horizon keeps, per engine in a process, the (L, W) pairs not yet settled and the highest L
settled; each probe settles the pairs whose writers are gone. Threads probe concurrently, so
a probe only settles the pairs of probes that had returned before it was sent (by this
process's monotonic clock): one sent earlier may have read pg_locks before a writer of a newer
pair marked itself. Heads only grow, every process
computes the same facts from the same database (so ids stay comparable across processes and
hosts), and an entry whose id is below the head a reader already returned cannot commit later:
its writer was in some W, which had ended before the head passed its L.

Liveness: only journal writers count, and only from their append (which comes first in a
recorder's transaction, last in a provisioning one) to their commit — an operator's open
transaction, a long import, a vacuum do not hold the head back. A writer that hangs inside its
transaction holds it back until PostgreSQL ends that transaction (the recorder sets
`idle_in_transaction_session_timeout`, pbxcontrol/recorder/lease.py).
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable

from sqlalchemy import Connection, Engine

#: Pairs kept at most: the newest are merged beyond (conservative: the head waits longer).
MAX_PENDING = 64


class Horizon:
    """The settled head of one database as this process knows it, and the unsettled probes."""

    def __init__(self) -> None:
        self.head = 0
        self.pending: list[tuple[int, frozenset[str], float]] = []  # (L, W, probe returned)
        self._lock = threading.Lock()

    def advance(self, last: int, writers: Iterable[str], sent: float, back: float) -> int:
        """One probe, sent and returned at `sent` and `back` (time.monotonic): `last` read from
        the sequence, then `writers` from pg_locks. Returns the head: every id <= it that will
        ever commit has committed."""
        active = frozenset(writers)
        with self._lock:
            if last < self.head:  # the sequence went back: a new database under the same URL
                self.head, self.pending = 0, []
            keep = []
            for pair in self.pending:
                if pair[2] < sent and not pair[1] & active:
                    self.head = max(self.head, pair[0])
                else:
                    keep.append(pair)
            self.pending = keep
            if not active:
                self.head = max(self.head, last)
            elif last > self.head:
                self.pending.append((last, active, back))
                if len(self.pending) > MAX_PENDING:
                    # Keep the older bound with both sets of writers and the later return: it
                    # settles later, never wrongly.
                    (top, a, _), (_, b, t) = self.pending[-2], self.pending.pop()
                    self.pending[-1] = (top, a | b, t)
            return self.head

    @property
    def settling(self) -> bool:
        """Probes wait for writers in flight: the head moves at a later probe, soon."""
        return bool(self.pending)


_HORIZONS: weakref.WeakKeyDictionary[Engine, Horizon] = weakref.WeakKeyDictionary()
_GUARD = threading.Lock()


def of(conn: Connection) -> Horizon:
    """The horizon of the database `conn` is on, shared by this process's threads."""
    engine = conn.engine
    with _GUARD:
        horizon = _HORIZONS.get(engine)
        if horizon is None:
            horizon = _HORIZONS[engine] = Horizon()
        return horizon
