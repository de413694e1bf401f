"""fleet: no row every recorder transaction updates (PostgreSQL; issue 21)

PostgreSQL only but for the index (SQLite has one writer at a time: its counters stay as
they are).

- The change journal's ids come from the sequence `leg_changes_ids` (CACHE 1), taken by
  `pbx_journal_append` after it marks its transaction as a journal writer (a shared advisory
  lock of the class JOURNAL_CLASS); readers merge them in commit order with
  `pbx_journal_probe` (the argument is in pbxcontrol/db/journal.py). The counter row `journal`
  is no longer written here; the sequence starts after it, so ids go on increasing.
- The data version's trigger skips the legs written by a transaction that journals them
  (`pbxcontrol.journalled`, set by `pbx_journal_append`): the journal's position counts those
  (pbxcontrol/db/dataversion.py). Every other write to the watched tables still bumps `api_data`.
- `machines (id, epoch)` is unique, which makes the epoch a key column: the takeover's
  compare-and-set (which changes the epoch) then waits for the holder's write transactions,
  each fenced by `FOR KEY SHARE` of its row, while the holder's renewal (`renewed_at` only)
  does not (pbxcontrol/recorder/lease.py).

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-06
"""

from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None
#: Not on PostgreSQL (pbxcontrol/db/migrate.py): the journal's ids move to a sequence and the
#: data version skips journalled leg writes, so a release before it would read a journal head
#: and a data version that no longer move (stale lists and streams beside newer recorders),
#: and its recorders would take ids the newer readers never see. On SQLite it adds an index.
additive = {"sqlite": True, "postgresql": False}

#: The advisory lock class of a transaction that appends to the journal (pbxcontrol.db.journal).
JOURNAL_CLASS = 727021

APPEND = f"""
CREATE OR REPLACE FUNCTION pbx_journal_append(
    m integer, uids text[], ops text[], old_s integer[], old_d integer[],
    new_s integer[], new_d integer[], look_up boolean, at_time double precision
) RETURNS bigint LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('pbxcontrol.journalled', 'yes', true);
    -- Marked as a journal writer before it takes an id: a reader that read the sequence
    -- finds this transaction in pg_locks until it ends.
    PERFORM pg_advisory_xact_lock_shared({JOURNAL_CLASS}, m);
    INSERT INTO leg_changes (id, machine, uniqueid, op, old_scustomer, old_dcustomer,
                             new_scustomer, new_dcustomer, at)
    SELECT nextval('leg_changes_ids'), m, c.u, c.o,
           CASE WHEN look_up THEN (SELECT l.scustomer FROM legs l
                                   WHERE l.machine = m AND l.uniqueid = c.u) ELSE c.os END,
           CASE WHEN look_up THEN (SELECT l.dcustomer FROM legs l
                                   WHERE l.machine = m AND l.uniqueid = c.u) ELSE c.od END,
           c.ns, c.nd, at_time
    FROM unnest(uids, ops, old_s, old_d, new_s, new_d) AS c(u, o, os, od, ns, nd);
    RETURN currval('leg_changes_ids');
END $$
"""
PROBE = f"""
CREATE OR REPLACE FUNCTION pbx_journal_probe(
    OUT last bigint, OUT writers text[], OUT counted bigint, OUT pruned bigint
) LANGUAGE plpgsql AS $$
BEGIN
    -- The sequence first, then who is writing: the order the horizon's argument needs.
    SELECT CASE WHEN is_called THEN last_value ELSE last_value - 1 END INTO last
    FROM leg_changes_ids;
    SELECT array_agg(virtualtransaction) INTO writers FROM pg_locks
    WHERE locktype = 'advisory' AND classid = {JOURNAL_CLASS} AND objsubid = 2;
    SELECT value INTO counted FROM counters WHERE name = 'api_data';
    SELECT value INTO pruned FROM counters WHERE name = 'journal_pruned';
END $$
"""
BUMP = "UPDATE counters SET value = value + 1 WHERE name = 'api_data'"
SKIPPING = (
    "CREATE OR REPLACE FUNCTION pbx_bump_api_data() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF TG_TABLE_NAME = 'legs' AND current_setting('pbxcontrol.journalled', true) = 'yes' THEN "
    "RETURN NULL; "
    "END IF; "
    "IF current_setting('pbxcontrol.api_data_bumped', true) IS DISTINCT FROM 'yes' THEN "
    f"{BUMP}; "
    "PERFORM set_config('pbxcontrol.api_data_bumped', 'yes', true); "
    "END IF; "
    "RETURN NULL; "
    "END $$"
)
ONCE = (
    "CREATE OR REPLACE FUNCTION pbx_bump_api_data() RETURNS trigger LANGUAGE plpgsql AS $$ "
    "BEGIN "
    "IF current_setting('pbxcontrol.api_data_bumped', true) IS DISTINCT FROM 'yes' THEN "
    f"{BUMP}; "
    "PERFORM set_config('pbxcontrol.api_data_bumped', 'yes', true); "
    "END IF; "
    "RETURN NULL; "
    "END $$"
)


def upgrade() -> None:
    op.create_index("ux_machines_id_epoch", "machines", ["id", "epoch"], unique=True)
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute("CREATE SEQUENCE leg_changes_ids AS bigint CACHE 1")
    op.execute(
        "SELECT setval('leg_changes_ids', greatest(value, 1), value > 0) FROM counters "
        "WHERE name = 'journal'"
    )
    op.execute(APPEND)
    op.execute(PROBE)
    op.execute(SKIPPING)


def downgrade() -> None:
    op.drop_index("ux_machines_id_epoch", table_name="machines")
    if op.get_bind().dialect.name != "postgresql":
        return
    op.execute(ONCE)
    op.execute(
        "UPDATE counters SET value = (SELECT CASE WHEN is_called THEN last_value "
        "ELSE last_value - 1 END FROM leg_changes_ids) WHERE name = 'journal'"
    )
    op.execute("DROP FUNCTION IF EXISTS pbx_journal_probe()")
    op.execute(
        "DROP FUNCTION IF EXISTS pbx_journal_append(integer, text[], text[], integer[], "
        "integer[], integer[], integer[], boolean, double precision)"
    )
    op.execute("DROP SEQUENCE IF EXISTS leg_changes_ids")
