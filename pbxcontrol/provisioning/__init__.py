"""Provisioning documents: validated whole, then bulk-upserted by natural key in one transaction."""

# fields: the JSON read into items with typed access · document: items checked into a Plan ·
# bulk: the upserts · accounts: roles and people · tree: the customer closure · progress: the bar.

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.orm import Session

from pbxcontrol.db import journal
from pbxcontrol.db.dataversion import bump, counted
from pbxcontrol.provisioning import accounts
from pbxcontrol.provisioning.bulk import Change, upsert
from pbxcontrol.provisioning.document import PRIVILEGES, Plan, validate
from pbxcontrol.provisioning.fields import SECTIONS, ProvisioningError, load_document
from pbxcontrol.provisioning.progress import ProgressBar
from pbxcontrol.provisioning.tree import rebuild_customer_tree

__all__ = [
    "PRIVILEGES",
    "SECTIONS",
    "Change",
    "ProvisioningError",
    "Summary",
    "apply",
    "load_document",
    "rebuild_customer_tree",
]


@dataclass(frozen=True)
class Summary:
    counts: dict[str, int]
    changes: dict[str, Change] = field(default_factory=dict)

    def __str__(self) -> str:
        return ", ".join(f"{n} {k}" for k, n in self.counts.items() if n) or "nothing"

    def report(self, *, dry_run: bool = False) -> str:
        """One line per list of the document: what was (or would be) inserted, updated, kept."""
        verb = "would insert" if dry_run else "inserted"
        lines = [f"dry run: {self} checked, nothing written" if dry_run else f"provisioned {self}"]
        for section, c in self.changes.items():
            if self.counts.get(section):
                lines.append(
                    f"  {section}: {c.inserted} {verb}, {c.updated} "
                    f"{'would update' if dry_run else 'updated'}, {c.unchanged} unchanged"
                )
        return "\n".join(lines)


def apply(
    session: Session, doc: dict[str, Any], *, dry_run: bool = False, progress: bool | None = None
) -> Summary:
    """Validate the whole document against the database, then upsert it (with dry_run: only
    compare it with what is stored). Never commits: the caller's transaction makes it
    all-or-nothing. `progress` None draws a bar only for a big document on a terminal."""
    counts = {s: len(doc.get(s, ())) for s in SECTIONS}
    with ProgressBar(sum(counts.values()), progress) as bar:
        bar.start("checking", None)
        plan = validate(session, doc)
        bar.finish("checking")
        for section in SECTIONS:
            bar.start(section, counts[section])
        changes = _apply_plan(session, plan, dry_run, bar)
    return Summary(counts, changes)


def _apply_plan(session: Session, plan: Plan, dry_run: bool, bar: ProgressBar) -> dict[str, Change]:
    conn = session.connection()
    version = counted(conn)
    changes = {"customers": upsert(conn, plan.customers, dry_run, _advance(bar, "customers"))}
    moved = bool(plan.customers.rows) and not dry_run and rebuild_customer_tree(session)
    changes["roles"] = accounts.apply_roles(conn, plan.roles, dry_run)
    bar.advance("roles", len(plan.roles))
    people = accounts.people_rows(conn, plan.people)
    changes["people"] = upsert(conn, people, dry_run, _advance(bar, "people"))
    for rows in plan.tables:
        changes[rows.section] = upsert(conn, rows, dry_run, _advance(bar, rows.section))
    # The tree, directory or lines changed: streams and in-memory views start anew. By what
    # was written, not only by the data version: on PostgreSQL that moves once per transaction
    # (migration 0013), so a second apply in one transaction would not move it again.
    written = any(changes[s].inserted or changes[s].updated for s in LISTED if s in changes)
    if not dry_run and (moved or written or counted(conn) != version):
        if changes["customers"].inserted or changes["customers"].updated:
            bump(conn)  # no trigger watches customers; cached answers must go all the same
        journal.record_reset(conn)
    return changes


#: Sections whose rows change what calls/active/list answers (scopes and names; customers:
#: their `monitor_announce` says who sees the `monitor` field, SPEC §11.8).
LISTED = ("customers", "lines", "directory")


def _advance(bar: ProgressBar, section: str):
    return lambda done: bar.advance(section, done)
