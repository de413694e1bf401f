"""`pbxcontrol grants --record ROLE --api ROLE`: least-privilege SQL for PostgreSQL (SPEC §13).

One database role for everything lets a recorder host read people, password hashes and the
token signing key. The SQL printed here (for existing roles; a superuser or the tables' owner
applies it) gives the recorder role what recording needs and nothing of people, passwords or
keys, and the API role what serving needs; the schema stays the owner's (`initdb`, migrations,
`provision`, `rotate-token-key` and `backup` run as the owner). Every table of the schema is
in one of the lists below, so a new table is a decision here (tests/core/test_grants.py fails
until it is made).
"""

from __future__ import annotations

from collections.abc import Iterable

from pbxcontrol.db.models import Base

SELECT = ("SELECT",)
WRITE = ("SELECT", "INSERT", "UPDATE", "DELETE")

#: `pbxcontrol record`: legs and their history, the change journal and its counters (the
#: data-version triggers of migrations 0002/0013 run as the writer and update `counters`), its
#: machine's lease and figures, and the provisioned numbers it classifies legs with.
RECORDER: dict[str, tuple[str, ...]] = {
    "legs": WRITE,
    "leg_history": WRITE,
    "leg_changes": ("SELECT", "INSERT", "DELETE"),
    "counters": ("SELECT", "UPDATE"),
    "machines": ("SELECT", "INSERT", "UPDATE"),
    "customers": SELECT,
    "lines": SELECT,
    "numbers": SELECT,
    "peers": SELECT,
    "call_actions": ("SELECT", "DELETE"),  # the audit's retention (recorder/retention.py)
    # Call control (SPEC §11.2): claims and outcomes of intents, pruned with the audit.
    "call_intents": ("SELECT", "UPDATE", "DELETE"),
    "call_controls": ("SELECT", "INSERT", "UPDATE"),  # recording sessions (SPEC §11.2 item 5)
    "alembic_version": SELECT,  # start-up checks the schema's revision and floor
    "schema_revision": SELECT,  # (pbxcontrol/db/migrate.py)
}

#: `pbxcontrol api`: reads what it answers and whom it authenticates; writes the login
#: throttle's failures, the call-control audit and intents, and upgraded password hashes.
API: dict[str, tuple[str, ...]] = {
    "legs": SELECT,
    "leg_changes": SELECT,
    "counters": SELECT,
    "machines": SELECT,  # /health, /metrics, which machine holds a leg
    "customers": SELECT,
    "customer_tree": SELECT,
    "roles": SELECT,
    "role_privileges": SELECT,
    "people": ("SELECT", "UPDATE"),  # UPDATE: a hash upgraded at login
    "token_keys": SELECT,  # rotate-token-key runs as the owner, like initdb and provision
    "revoked_tokens": ("SELECT", "INSERT", "DELETE"),  # user/logout, pruned once expired
    "stream_tickets": ("SELECT", "INSERT", "DELETE"),  # made, used up, pruned
    "login_failures": ("SELECT", "INSERT", "DELETE"),
    "call_actions": ("SELECT", "INSERT", "UPDATE"),  # UPDATE: the answer, once known
    "call_intents": ("SELECT", "INSERT", "UPDATE"),  # UPDATE: expired, no holder took it
    "lines": SELECT,
    "numbers": SELECT,
    "peers": SELECT,
    "directory": SELECT,
    "alembic_version": SELECT,
    "schema_revision": SELECT,
}

#: Neither role: only the owner reads or writes these (none today).
OWNER_ONLY: frozenset[str] = frozenset()

#: Sequences no table's key names (PostgreSQL, migration 0016): the change journal's ids,
#: taken by the recorders' pbx_journal_append and read by every reader's pbx_journal_probe;
#: UPDATE: a recorder's first connection to a promoted standby moves them on (setval,
#: pbxcontrol/db/failover.py), the API role's cannot and leaves it to the writers.
RECORDER_SEQUENCES: dict[str, tuple[str, ...]] = {"leg_changes_ids": ("USAGE", "SELECT", "UPDATE")}
API_SEQUENCES: dict[str, tuple[str, ...]] = {"leg_changes_ids": ("SELECT",)}


def quote(role: str) -> str:
    """`role` as a PostgreSQL identifier; ValueError for a name PostgreSQL would not keep."""
    if not role or "\0" in role or len(role.encode()) > 63:
        raise ValueError(f"{role!r} is not a PostgreSQL role name (1 to 63 bytes, no NUL)")
    return '"' + role.replace('"', '""') + '"'


def sequences(tables: Iterable[str]) -> list[str]:
    """The sequences behind the integer keys of `tables` that a role inserts into (PostgreSQL
    names a serial or identity column's sequence TABLE_COLUMN_seq)."""
    found = []
    for name in tables:
        table = Base.metadata.tables.get(name)
        if table is None:
            continue
        column = table.autoincrement_column
        if column is not None:
            found.append(f"{name}_{column.name}_seq")
    return found


def role_sql(
    role: str,
    tables: dict[str, tuple[str, ...]],
    schema: str,
    more_sequences: dict[str, tuple[str, ...]],
) -> list[str]:
    who = quote(role)
    lines = [
        f"REVOKE ALL ON ALL TABLES IN SCHEMA {schema} FROM {who};",
        f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {schema} FROM {who};",
        f"GRANT USAGE ON SCHEMA {schema} TO {who};",
    ]
    for table, privileges in sorted(tables.items()):
        lines.append(f"GRANT {', '.join(privileges)} ON {schema}.{table} TO {who};")
    inserting = [t for t, privileges in sorted(tables.items()) if "INSERT" in privileges]
    for sequence in sequences(inserting):
        lines.append(f"GRANT USAGE ON SEQUENCE {schema}.{sequence} TO {who};")
    for sequence, privileges in sorted(more_sequences.items()):
        lines.append(f"GRANT {', '.join(privileges)} ON SEQUENCE {schema}.{sequence} TO {who};")
    return lines


def grants_sql(record: str, api: str, schema: str = "public") -> str:
    """The SQL, one transaction: each role loses what it had on the schema's tables and
    sequences, then gets its list."""
    if quote(record) == quote(api):
        raise ValueError("--record and --api name the same role: it would get both lists")
    schema_name = quote(schema)
    head = [
        "-- pbxcontrol: least privilege for the recorder and API roles (SPEC §13).",
        "-- Apply as a superuser or the owner of the tables, after `pbxcontrol initdb`, and",
        "-- again after each upgrade: psql -v ON_ERROR_STOP=1 -d DATABASE -f THIS_FILE",
        "BEGIN;",
        f"-- {record}: `pbxcontrol record` (no people, passwords or token keys)",
    ]
    body = role_sql(record, RECORDER, schema_name, RECORDER_SEQUENCES)
    body += [f"-- {api}: `pbxcontrol api`"] + role_sql(api, API, schema_name, API_SEQUENCES)
    return "\n".join(head + body + ["COMMIT;", ""])


def print_grants(record: str, api: str, schema: str) -> int:
    """The command: the SQL on stdout; exit status 2 for a bad role name."""
    import sys

    try:
        sys.stdout.write(grants_sql(record, api, schema))
    except ValueError as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return 2
    return 0
