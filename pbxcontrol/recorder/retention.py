"""How long the tables that grow keep their rows (SPEC §12), and the recorders' pruning of them
at each sweep: a machine's ended legs (`[recorder] history_days`), the change journal
(`journal_seconds`) and the call-control audit (`audit_days`), in short transactions."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from pbxcontrol.recorder import store

log = logging.getLogger("pbxcontrol.recorder")

PRUNE_CHUNK, PRUNE_CHUNKS = 5000, 10  # rows deleted per transaction, per sweep
#: Seconds between prunes of the audit (kept for days; its rows have no index on their time
#: alone, so each prune reads the table once).
AUDIT_PRUNE_EVERY = 3600.0
DAY = 86400


@dataclass
class Retention:
    history_days: int = 0  # 0 = keep the history of ended legs forever
    journal_seconds: float = 600.0  # how long the change journal keeps entries
    audit_days: int = 0  # 0 = keep the call-control audit forever
    _audit_due: float = field(default=0.0, init=False)  # (wall clock) its next prune

    def prune(
        self,
        with_db: Callable[[Callable[[Session], int], str], int | None],
        machine: int,
        name: str,
        now: float,
    ) -> int:
        """One sweep's pruning through `with_db` (the writer's fenced transactions): the
        journal, the audit when due, then `machine`'s history. Returns how many history rows
        went."""
        store.prune_journal(with_db, now - self.journal_seconds, PRUNE_CHUNK)
        if self.audit_days and now >= self._audit_due:
            self._audit_due = now + AUDIT_PRUNE_EVERY
            store.prune_audit(with_db, now - self.audit_days * DAY, PRUNE_CHUNK, PRUNE_CHUNKS)
        if not self.history_days:
            return 0
        cutoff = now - self.history_days * DAY
        total = store.prune_old(with_db, machine, cutoff, PRUNE_CHUNK, PRUNE_CHUNKS)
        log.debug("%s: pruned %d history rows older than %d days", name, total, self.history_days)
        return total
