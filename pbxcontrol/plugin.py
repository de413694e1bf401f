"""The whole of what a plugin may use from the core: its context, the request, the tables.

A plugin is a module (or package) with a docstring and `setup(ctx: PluginContext)`, announced
through the entry-point group `pbxcontrol.plugins` (the built-in ones too, in setup.cfg) and
enabled by name in `[plugins] enabled`. In `setup` it registers API functions; each is called
as `handler(request: ApiRequest)` with the request's parameters, the authenticated caller, the
client's address and one database connection (one transaction, shared with auth). It returns
the envelope's `data`, or an `Outcome` (another code, no data, the transaction committed), or
raises `ApiError` (rolled back). Live channels are reached through `ctx.channels`. Plugins
read the tables exported here (SQLAlchemy Core `Table`s), never `pbxcontrol.db.models`, and
never import each other.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, Table

from pbxcontrol.ari.control import Channels, ChannelsUnavailable
from pbxcontrol.auth.authenticator import Caller
from pbxcontrol.db.dataversion import data_version
from pbxcontrol.db.journal import REMOVE, RESET, UPSERT
from pbxcontrol.db.journal import Entry as JournalEntry
from pbxcontrol.db.journal import Position as JournalPosition
from pbxcontrol.db.journal import position as journal_position
from pbxcontrol.db.journal import since as journal_since
from pbxcontrol.db.journal import touched as journal_touched
from pbxcontrol.db.models import LEG_FIELDS, Base
from pbxcontrol.db.unrecorded import unrecorded as unrecorded_machines
from pbxcontrol.http.api import ApiRequest, Handler
from pbxcontrol.http.envelope import ApiError, Outcome
from pbxcontrol.streams.stream import Event, StreamView

#: A stream function's opener: (ApiRequest) -> StreamView.
StreamOpener = Callable[[ApiRequest], StreamView]

__all__ = [
    "LEG_FIELDS",
    "ApiError",
    "ApiRequest",
    "Caller",
    "Channels",
    "ChannelsUnavailable",
    "Event",
    "Handler",
    "JournalEntry",
    "JournalPosition",
    "Outcome",
    "PluginContext",
    "PluginError",
    "REMOVE",
    "RESET",
    "StreamOpener",
    "StreamView",
    "UPSERT",
    "call_actions",
    "customer_tree",
    "customers",
    "data_version",
    "directory",
    "journal_position",
    "journal_since",
    "journal_touched",
    "legs",
    "lines",
    "unrecorded_machines",
]

#: The entry-point group plugins are announced in.
GROUP = "pbxcontrol.plugins"

# The tables a plugin may read, by their SQL names (not the ORM classes: those are the
# recorder's and provisioning's business). Columns: see pbxcontrol/db/models.py.
legs: Table = Base.metadata.tables["legs"]  # live call legs; API field order in LEG_FIELDS
customers: Table = Base.metadata.tables["customers"]  # id, parent_id, name, max_calls
customer_tree: Table = Base.metadata.tables["customer_tree"]  # ancestor_id, descendant_id, depth
directory: Table = Base.metadata.tables["directory"]  # customer_id (NULL = global), number, name
lines: Table = Base.metadata.tables["lines"]  # endpoint, customer_id, number, name, caller IDs
# Written by call-control functions: one row per request (see CallAction in the models).
call_actions: Table = Base.metadata.tables["call_actions"]


class PluginError(Exception):
    """A plugin could not be found, loaded or set up; stops start-up."""


@dataclass(frozen=True)
class PluginContext:
    """What `setup(ctx)` receives."""

    name: str
    config: dict[str, str]  # the [plugin:NAME] section, if any
    log: logging.Logger
    _engine: Engine
    _add: Callable[[str, Handler, Iterable[str]], None]
    _channels: Channels | None = None
    _add_stream: Callable[[str, StreamOpener, Iterable[str]], None] | None = None
    _add_static: Callable[[str, Path], None] | None = None
    _follow: Callable[[Callable[[Connection], None]], None] | None = None

    @property
    def channels(self) -> Channels:
        """Live channels on the configured machines (REST only; pbxcontrol.ari.control)."""
        if self._channels is None:
            raise PluginError(f"plugin {self.name!r}: this process controls no channels")
        return self._channels

    def add_api_function(self, path: str, handler: Handler, privileges: Iterable[str]) -> None:
        """Serve `handler` at /api/json/<path>/ behind auth, the privilege check (the caller
        needs one of `privileges`) and the envelope."""
        self._add(path, handler, privileges)

    def add_static(self, prefix: str, directory: Path) -> None:
        """Serve the files in `directory` (a folder of the plugin's package) at /<prefix>/,
        `index.html` at /<prefix>/ itself, without auth: pages whose scripts then call the
        API with a token. Only the files there at start-up are served, with their content
        type, `Cache-Control: no-cache` and a `default-src 'self'` Content-Security-Policy."""
        if self._add_static is None:
            raise PluginError(f"plugin {self.name!r}: this process serves no pages")
        self._add_static(prefix, directory)

    def add_stream_function(
        self, path: str, opener: StreamOpener, privileges: Iterable[str]
    ) -> None:
        """Serve a live stream at /api/stream/<path>/ (Server-Sent Events) behind the same auth
        and privilege check: `opener(request)` validates like a handler (raising ApiError) and
        returns the StreamView that computes the stream's events from the change journal."""
        if self._add_stream is not None:  # None: this process serves no HTTP (the CLI tools)
            self._add_stream(path, opener, privileges)

    def follow_journal(self, follower: Callable[[Connection], None]) -> None:
        """`follower(conn)` is called in the API process's stream hub thread, on the hub's
        connection, each time the hub has read new change-journal entries: at once after a
        commit of a recorder in the same process (`serve`), at each NOTIFY on PostgreSQL, and
        within the hub's poll (0.1 s) on SQLite. For keeping in-memory state current off the
        request path; it must be quick, and what it raises is logged, not propagated."""
        if self._follow is not None:  # None: this process serves no HTTP (the CLI tools)
            self._follow(follower)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for start-up checks only (handlers get theirs per request)."""
        with self._engine.connect() as conn:
            yield conn


def _entry_points() -> dict[str, list[EntryPoint]]:
    found: dict[str, list[EntryPoint]] = {}
    for ep in entry_points(group=GROUP):
        if ep.value not in [known.value for known in found.get(ep.name, [])]:
            found.setdefault(ep.name, []).append(ep)
    return found


def available() -> frozenset[str]:
    """Names of the installed plugins."""
    return frozenset(_entry_points())


def load(name: str) -> ModuleType:
    """The plugin module announced as `name`, checked to have `setup(ctx)`."""
    found = _entry_points().get(name)
    if not found:
        known = ", ".join(sorted(available())) or "none"
        raise PluginError(f"unknown plugin {name!r} (installed: {known})")
    if len(found) > 1:
        raise PluginError(
            f"plugin {name!r} is announced more than once: {', '.join(ep.value for ep in found)}"
        )
    try:
        module: Any = found[0].load()
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed to import: {exc}") from exc
    if not isinstance(module, ModuleType) or not callable(getattr(module, "setup", None)):
        raise PluginError(f"plugin {name!r} ({found[0].value}) is not a module with setup(ctx)")
    return module
