"""The schema: SQLAlchemy 2 typed mappings of every table (changes go through Alembic)."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column

# The shared base, and the leg tables (whose columns come from legfields.py), are named
# here too: this module is the one place that lists every table.
from pbxcontrol.db.base import BIG_INT as BIG_INT
from pbxcontrol.db.base import NAMING as NAMING
from pbxcontrol.db.base import Base, _f, _i, _s
from pbxcontrol.db.legs import LEG_FIELDS as LEG_FIELDS
from pbxcontrol.db.legs import LEG_HISTORY_TABLE as LEG_HISTORY_TABLE
from pbxcontrol.db.legs import LEG_INT_FIELDS as LEG_INT_FIELDS
from pbxcontrol.db.legs import LEG_STRING_FIELDS as LEG_STRING_FIELDS
from pbxcontrol.db.legs import LEGS_TABLE as LEGS_TABLE
from pbxcontrol.db.legs import ActiveLeg as ActiveLeg
from pbxcontrol.db.legs import Leg as Leg
from pbxcontrol.db.legs import LegHistory as LegHistory


class Machine(Base):
    """One Asterisk machine: what its legs belong to, and its lease (SPEC §10).

    The lease (pbxcontrol.recorder.lease), for readers such as /health:
    - `holder`: host:pid of the process allowed to record the machine; "" = released (a clean
      stop) or never held. A holder whose `renewed_at` is older than 0.6 x `takeover_seconds`
      (`lease.EXPIRY_SHARE`) is dead, hung or cut off: its lease is expired, a standby takes it.
    - `epoch`: the fencing token, +1 at each takeover; every write of the holder checks it in
      its own transaction, so only the current epoch writes.
    - `renewed_at`: the DATABASE's clock (Unix seconds) at the holder's last renewal; compare
      it with the database's now (`db.clock.db_now`), not a process's clock.
    - `(id, epoch)` is unique (migration 0016): that makes the epoch a key column, so on
      PostgreSQL a takeover waits for the holder's fenced writes and a renewal does not.
    - `connected`: the holder's ARI websocket is up (written at once when it comes or goes).
    - `last_event_at`: the database's clock (Unix seconds) at the last websocket message (the
      holder writes its own measure of that message's age subtracted from the database's now).
    - `heartbeat_at`, `last_sync`: the database's clock at its last status write (`pbxcontrol
      status`) and at its last reconcile with Asterisk.
    - `recorded`: what the machine's live legs say in their `recorded` column (SPEC §12):
      false once its lease went 2 x `takeover_seconds` without a renewal, true again once a
      holder reconciled (pbxcontrol/db/unrecorded.py); `renewed_at` is then "since when".
    """

    __tablename__ = "machines"
    __table_args__ = (Index("ux_machines_id_epoch", "id", "epoch", unique=True),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    name: Mapped[str] = _s()
    startup_time: Mapped[str] = _s(64)  # as /asterisk/info reports it; a change = restart
    last_sync: Mapped[float] = mapped_column(Float, nullable=False, default=0.0)
    # The recorder's heartbeat (pbxcontrol.recorder.status; read by `pbxcontrol status`).
    holder: Mapped[str] = _s()  # host:pid of the recording process; "" = none
    connected: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=False, server_default=false()
    )
    heartbeat_at: Mapped[float] = _f()  # Unix seconds of the holder's last write
    last_event_at: Mapped[float] = _f()  # last message read from the ARI websocket
    events_total: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    events_per_second: Mapped[float] = _f()  # over the last heartbeat interval
    # The lease (migration 0011; see the docstring).
    epoch: Mapped[int] = mapped_column(BigInteger, nullable=False, default=0, server_default="0")
    renewed_at: Mapped[float] = _f()
    # What its legs were last set to (migration 0017; see the docstring).
    recorded: Mapped[bool] = mapped_column(
        Boolean, nullable=False, default=True, server_default=true()
    )
    # The holder's counters for GET /metrics (migration 0012; pbxcontrol.recorder.status).
    reconnects: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    reconciles: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    corrections: Mapped[int] = mapped_column(
        BigInteger, nullable=False, default=0, server_default="0"
    )
    lag_seconds: Mapped[float] = _f()  # longest read-to-commit time, last heartbeat interval


class Counter(Base):
    """Change counters. `api_data` grows with every change to what the API lists (legs,
    the customer tree, directory, lines); database triggers maintain it, so a cached answer
    is never served after a change, whoever wrote it."""

    __tablename__ = "counters"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[int] = mapped_column(BIG_INT, nullable=False, default=0)


class LegChange(Base):
    """The change journal (pbxcontrol.db.journal): one row per leg change, or a `reset` row for
    a write that may change every answer; ids are handed out in commit order."""

    __tablename__ = "leg_changes"
    __table_args__ = (Index("ix_leg_changes_at", "at"),)
    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    machine: Mapped[int] = mapped_column(Integer, nullable=False)
    uniqueid: Mapped[str] = mapped_column(String(150), nullable=False)
    op: Mapped[str] = mapped_column(String(8), nullable=False)  # upsert, remove, reset
    old_scustomer: Mapped[int | None] = mapped_column(Integer)  # None: not a live leg before
    old_dcustomer: Mapped[int | None] = mapped_column(Integer)
    new_scustomer: Mapped[int | None] = mapped_column(Integer)  # None: not a live leg after
    new_dcustomer: Mapped[int | None] = mapped_column(Integer)
    at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix time of the write


class Customer(Base):
    __tablename__ = "customers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"), index=True)
    name: Mapped[str] = _s()
    max_calls: Mapped[int] = _i()  # 0 = unlimited
    # Call-control policy (SPEC §11.7); NULL = inherited from the parent (migration 0020).
    monitor: Mapped[str | None] = mapped_column(String(8))
    monitor_announce: Mapped[int | None] = mapped_column(Integer)
    record: Mapped[int | None] = mapped_column(Integer)
    context: Mapped[str | None] = mapped_column(String(79))


class CustomerTree(Base):
    """Closure of the customer tree: every (ancestor, descendant) pair, self included (depth 0).

    Maintained by provisioning, so scope checks and nearest-ancestor lookups are plain joins.
    """

    __tablename__ = "customer_tree"
    ancestor_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    descendant_id: Mapped[int] = mapped_column(Integer, primary_key=True, index=True)
    depth: Mapped[int] = mapped_column(Integer, nullable=False)


class Role(Base):
    __tablename__ = "roles"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)


class RolePrivilege(Base):
    __tablename__ = "role_privileges"
    role: Mapped[str] = mapped_column(
        ForeignKey("roles.name", ondelete="CASCADE"), primary_key=True
    )
    privilege: Mapped[str] = mapped_column(String(64), primary_key=True)


class Person(Base):
    __tablename__ = "people"
    username: Mapped[str] = mapped_column(String(128), primary_key=True)
    password_hash: Mapped[str] = mapped_column(String(255), nullable=False)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), nullable=False)
    role: Mapped[str] = mapped_column(ForeignKey("roles.name"), nullable=False)
    enabled: Mapped[bool] = mapped_column(Boolean, nullable=False, default=True)
    # Every token carries the value current when it was issued; provisioning draws a new one
    # when the password really changes or `enabled` changes, which revokes older tokens. Not
    # the hash: a login that upgrades an old hash must not revoke anything. Random rather than
    # a counter, so a person deleted and created again does not revive old tokens.
    token_epoch: Mapped[str] = mapped_column(String(32), nullable=False, server_default="")


class TokenKey(Base):
    """The installation's token signing keys (HS256), one row each: the first made by
    `pbxcontrol initdb`, the next by `pbxcontrol rotate-token-key`. The newest signs; every one
    verifies the tokens that name its `id` (the JWT's `kid`). Every API process re-reads them
    every few seconds, so every process and host signs and verifies with the same set."""

    __tablename__ = "token_keys"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    secret: Mapped[str] = mapped_column(String(128), nullable=False)  # hex; never logged
    # Unix time it was made (NULL: before migration 0014); a key is dropped once its
    # successor has signed for longer than any token lives.
    created: Mapped[float | None] = mapped_column(Float, nullable=True)


class RevokedToken(Base):
    """A token ended by `user/logout` before its expiry, by its `jti`: checked with the person
    lookup on every token request, on every process and host. Kept until the token would have
    expired anyway (`expires`), then pruned."""

    __tablename__ = "revoked_tokens"
    __table_args__ = (Index("ix_revoked_tokens_expires", "expires"),)
    jti: Mapped[str] = mapped_column(String(32), primary_key=True)
    expires: Mapped[int] = mapped_column(BigInteger, nullable=False)  # the token's exp


class StreamTicket(Base):
    """A one-use ticket that opens one live stream without credentials in its URL
    (`stream/ticket`), valid until `expires`. Stored as a digest: the table never holds a
    usable ticket. Opening a stream deletes the row (one use, whichever process or host wins)."""

    __tablename__ = "stream_tickets"
    __table_args__ = (Index("ix_stream_tickets_expires", "expires"),)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)  # sha256, hex
    expires: Mapped[float] = mapped_column(Float, nullable=False)  # Unix time
    # Who it was issued to, as a token would name them (the stream is re-checked as theirs).
    username: Mapped[str] = mapped_column(String(128), nullable=False)
    epoch: Mapped[str] = mapped_column(String(32), nullable=False)
    scope: Mapped[str] = mapped_column(String(8), nullable=False)
    jti: Mapped[str] = mapped_column(String(32), nullable=False, default="")  # "" = by password
    token_expires: Mapped[int | None] = mapped_column(BigInteger, nullable=True)


class LoginFailure(Base):
    """One failed login, kept for the throttle window. `key` is a digest of "user:<name>" or
    "addr:<client address>", so neither is stored in clear; shared by every API process and
    host on the database."""

    __tablename__ = "login_failures"
    __table_args__ = (
        Index("ix_login_failures_key_at", "key", "at"),
        Index("ix_login_failures_at", "at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(32), nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)


class CallAction(Base):
    """One call-control request (calls/hangup, ...) by a person with `actions`, whatever its
    outcome: who, from where, when, what was asked, which legs it reached, the answer. Also
    the per-person rate limit's memory, shared by every API process and host."""

    __tablename__ = "call_actions"
    __table_args__ = (Index("ix_call_actions_username_at", "username", "at"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds
    username: Mapped[str] = mapped_column(String(128), nullable=False)
    customer_id: Mapped[int] = mapped_column(Integer, nullable=False)
    address: Mapped[str] = _s(64)  # the client's address as the API server saw it
    action: Mapped[str] = mapped_column(String(32), nullable=False)  # "hangup"
    callid: Mapped[str] = _s()  # as asked ("" when not given)
    uniqueid: Mapped[str] = _s()
    machine: Mapped[int] = _i()  # 0 = not given
    # The legs it found, as JSON [[machine, uniqueid, what became of it], ...]
    legs: Mapped[str] = mapped_column(Text, nullable=False, default="")
    code: Mapped[int] = mapped_column(Integer, nullable=False)  # the envelope's code
    message: Mapped[str] = mapped_column(Text, nullable=False, default="")


class CallIntent(Base):
    """What a call-control request asks the holder of one machine's lease to do (SPEC §11.2;
    pbxcontrol/db/intents.py): written by the API after the request's audit row
    (`action_id`), claimed by the holder under its lease `epoch`, completed with the outcome."""

    __tablename__ = "call_intents"
    __table_args__ = (
        Index("ix_call_intents_machine_state", "machine", "state"),
        Index("ix_call_intents_action_id", "action_id"),
        Index("ix_call_intents_at", "at"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    action_id: Mapped[int] = mapped_column(Integer, nullable=False)
    at: Mapped[float] = mapped_column(Float, nullable=False)  # Unix seconds, as the audit's
    machine: Mapped[int] = mapped_column(Integer, nullable=False)
    function: Mapped[str] = mapped_column(String(32), nullable=False)  # "hangup", ...
    targets: Mapped[str] = mapped_column(Text, nullable=False)  # JSON list of uniqueids
    params: Mapped[str] = mapped_column(Text, nullable=False)  # JSON object
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # intents.STATES
    deadline: Mapped[float] = mapped_column(Float, nullable=False)  # the database's clock
    epoch: Mapped[int] = _i()  # the lease epoch that claimed it (0: not claimed)
    code: Mapped[int] = _i()
    message: Mapped[str] = mapped_column(Text, nullable=False, default="", server_default="")
    legs: Mapped[str] = mapped_column(Text, nullable=False, default="[]", server_default="[]")
    created: Mapped[str] = mapped_column(Text, nullable=False, default="{}", server_default="{}")


class CallControl(Base):
    """A recording session the holder of a machine's lease runs (SPEC §11.2 item 5;
    pbxcontrol/db/controls.py): the next holder reconciles the rows not `ended`."""

    __tablename__ = "call_controls"
    __table_args__ = (Index("ix_call_controls_machine_state", "machine", "state"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    machine: Mapped[int] = mapped_column(Integer, nullable=False)
    kind: Mapped[str] = mapped_column(String(16), nullable=False)  # "record", "monitor"
    uniqueid: Mapped[str] = mapped_column(String(150), nullable=False)  # the target leg
    snoop: Mapped[str] = _s(150)  # the snoop channel's id, pbxc-<intent>-record
    name: Mapped[str] = _s(512)  # the live recording's name
    path: Mapped[str] = _s(1024)  # its file on the Asterisk host
    supervisor: Mapped[str] = _s(150)  # kind monitor: the supervisor's leg (migration 0024)
    mode: Mapped[str] = _s(8)  # kind monitor: listen, whisper or barge
    state: Mapped[str] = mapped_column(String(16), nullable=False)  # controls.STATES
    intent_id: Mapped[int] = _i()
    epoch: Mapped[int] = _i()  # the lease epoch that last wrote it
    started: Mapped[float] = mapped_column(Float, nullable=False)  # the database's clock
    ended: Mapped[float] = mapped_column(Float, nullable=False, default=0.0, server_default="0")


class Line(Base):
    """A telephone line: a provisioned phone endpoint such as PJSIP/alice."""

    __tablename__ = "lines"
    endpoint: Mapped[str] = mapped_column(String(128), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), nullable=False)
    number: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    name: Mapped[str] = _s()
    callerid_internal: Mapped[str] = _s(64)
    callerid_external: Mapped[str] = _s(64)
    callername_internal: Mapped[str] = _s(128)
    callername_external: Mapped[str] = _s(128)
    owner: Mapped[str] = _s(128)
    machine: Mapped[int | None] = mapped_column(Integer)  # where click-to-call rings it


class Peer(Base):
    """A trunk to a carrier."""

    __tablename__ = "peers"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    endpoint: Mapped[str] = mapped_column(String(128), nullable=False, unique=True)
    name: Mapped[str] = _s()
    ingroup: Mapped[int] = _i()
    outgroup: Mapped[int] = _i()
    billing_peer: Mapped[int] = _i()  # 0 = bill as this peer


class Number(Base):
    """An inbound number (DID) and the customer billed for calls to it."""

    __tablename__ = "numbers"
    number: Mapped[str] = mapped_column(String(64), primary_key=True)
    customer_id: Mapped[int] = mapped_column(ForeignKey("customers.id"), nullable=False)


class DirectoryEntry(Base):
    __tablename__ = "directory"
    __table_args__ = (
        UniqueConstraint("number", "customer_id"),
        # NULL never equals NULL in the constraint above: global entries need their own key.
        Index(
            "uq_directory_number_global",
            "number",
            unique=True,
            sqlite_where=text("customer_id IS NULL"),
            postgresql_where=text("customer_id IS NULL"),
        ),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    customer_id: Mapped[int | None] = mapped_column(ForeignKey("customers.id"))
    number: Mapped[str] = mapped_column(String(64), nullable=False)
    name: Mapped[str] = _s()
