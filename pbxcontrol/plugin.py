"""The whole of what a plugin may use from the core: its context, the request, the tables.

A plugin is a module (or package) with a docstring and `setup(ctx: PluginContext)`, announced
through the entry-point group `pbxcontrol.plugins` (the built-in ones too, in setup.cfg) and
enabled by name in `[plugins] enabled`. In `setup` it registers API functions; each is called
as `handler(request: ApiRequest)` with the request's parameters, the authenticated caller, the
client's address and one database connection (one transaction, shared with auth). It returns
the envelope's `data`, or an `Outcome` (another code, no data, the transaction committed), or
raises `ApiError` (rolled back). Live channels are acted on through `ctx.control` (intents the
recording process carries out, SPEC §11.2: `Control.carry_out` with `Intent`s and the audit's
`ControlRequest`, then `Control.complete` with the answer), the change
journal through `ctx.journal` (a `Journal`: hand it to the objects `setup` builds). Plugins
read the tables in `tables` (SQLAlchemy Core `Table`s), never `pbxcontrol.db.models`, and
never import each other.

A plugin may also offer command-line commands (`pbxcontrol NAME ...`): its module's
`commands()` returns `Command`s. The parser is built before any config is read, from every
installed plugin (enabled or not), so `commands()` and each command's `arguments(parser)` need
no database and no config; `run(ctx: CommandContext, args)` then gets this process's JSON API
with the enabled plugins and returns the exit status.

A plugin may check its `[plugin:NAME]` section without starting: its module's
`check_config(values)` returns `ConfigNotice`s, which `pbxcontrol check-config` prints (a
`deprecated` one is a warning: the file still works).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import Connection, Engine, Table

from pbxcontrol.auth.authenticator import Caller
from pbxcontrol.db.intents import Control, Intent
from pbxcontrol.db.intents import Request as ControlRequest
from pbxcontrol.db.journal import Journal
from pbxcontrol.db.legs import HISTORY_SPANS
from pbxcontrol.db.models import LEG_FIELDS, Base
from pbxcontrol.http.api import ApiRequest, Handler
from pbxcontrol.http.envelope import ApiError, Outcome, Pieces
from pbxcontrol.ops import table
from pbxcontrol.streams.stream import Event, OneSnapshot, StreamView

#: A stream function's opener: (ApiRequest) -> StreamView, or OneSnapshot for a stream that
#: is one snapshot and ends.
StreamOpener = Callable[[ApiRequest], StreamView | OneSnapshot]

# What plugins use; the core also finds PluginError, available(), load() and commands_of() here.
__all__ = [
    "ApiError",
    "ApiRequest",
    "Caller",
    "Command",
    "CommandContext",
    "ConfigNotice",
    "Control",
    "ControlRequest",
    "Event",
    "Intent",
    "Journal",
    "OneSnapshot",
    "Outcome",
    "Pieces",
    "PluginContext",
    "StreamView",
    "table",
    "tables",
]

#: The entry-point group plugins are announced in.
GROUP = "pbxcontrol.plugins"


@dataclass(frozen=True)
class Tables:
    """The tables a plugin may read, by their SQL names (not the ORM classes: those are the
    recorder's and provisioning's business). Columns: see pbxcontrol/db/models.py."""

    legs: Table  # live call legs; the API's field order in `leg_fields`
    leg_fields: tuple[str, ...]
    # Ended legs: the columns of `legs`, `ended` (Unix time), `cause`, `cause_txt`, and `span`,
    # the duration class (`history_spans`: a leg of class k lasted less than history_spans[k]
    # seconds) that indexes (customer, span, start, ended) and (span, start, ended) are on: the
    # legs live at a past moment, per class, without reading the whole history.
    leg_history: Table
    history_spans: tuple[int, ...]
    customers: Table  # id, parent_id, name, max_calls
    customer_tree: Table  # ancestor_id, descendant_id, depth
    directory: Table  # customer_id (NULL = global), number, name
    lines: Table  # endpoint, customer_id, number, name, caller IDs
    # Written by call-control functions: one row per request (see CallAction in the models).
    call_actions: Table
    # One row per machine: its lease (holder, renewed_at by the database's clock) and
    # `recorded`, false while its legs are flagged not recorded (SPEC §12; Machine's docstring).
    machines: Table


_TABLES = Base.metadata.tables
tables = Tables(
    legs=_TABLES["legs"],
    leg_fields=LEG_FIELDS,
    leg_history=_TABLES["leg_history"],
    history_spans=HISTORY_SPANS,
    customers=_TABLES["customers"],
    customer_tree=_TABLES["customer_tree"],
    directory=_TABLES["directory"],
    lines=_TABLES["lines"],
    call_actions=_TABLES["call_actions"],
    machines=_TABLES["machines"],
)


class PluginError(Exception):
    """A plugin could not be found, loaded or set up; stops start-up."""


@dataclass(frozen=True)
class PluginContext:
    """What `setup(ctx)` receives."""

    name: str
    config: dict[str, str]  # the [plugin:NAME] section, if any
    log: logging.Logger
    _engine: Engine
    _add: Callable[..., None]  # JsonApi.add: (path, handler, privileges, *, read)
    _control: Control | None = None
    _add_stream: Callable[[str, StreamOpener, Iterable[str]], None] | None = None
    _add_static: Callable[[str, Path], None] | None = None
    #: The change journal (Journal's verbs: position, version, since, touched, follow).
    journal: Journal = field(default_factory=Journal)
    #: [recorder] history_days: ended legs are kept this many days (0: forever).
    history_days: int = 0

    @property
    def control(self) -> Control:
        """Call control: intents carried out by each machine's lease holder (SPEC §11.2;
        pbxcontrol/db/intents.py). This process needs no ARI settings for it."""
        if self._control is None:
            raise PluginError(f"plugin {self.name!r}: this process controls no channels")
        return self._control

    def add_api_function(
        self, path: str, handler: Handler, privileges: Iterable[str], *, read: bool = False
    ) -> None:
        """Serve `handler` at /api/json/<path>/ behind auth, the privilege check (the caller
        needs one of `privileges`; `"*"`: any, for a handler that refuses by itself — e.g. to
        audit the refusal) and the envelope. `read=True`: it only reads (changes
        nothing), so a token of scope `read` (a wallboard's) may call it too; otherwise such a
        token gets 402. Stream functions are all read-only."""
        self._add(path, handler, privileges, read=read)

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
        returns the StreamView that computes the stream's events from the change journal, or
        a OneSnapshot: that snapshot is sent and the stream ends."""
        if self._add_stream is not None:  # None: this process serves no HTTP (the CLI tools)
            self._add_stream(path, opener, privileges)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        """A connection for start-up checks only (handlers get theirs per request)."""
        with self._engine.connect() as conn:
            yield conn


@dataclass(frozen=True)
class CommandContext:
    """What a plugin command's `run(ctx, args)` receives: this process's JSON API, with the
    enabled plugins' functions, and who acts. The core closes the database after `run`."""

    _call: Callable[[str, dict[str, str], Caller], dict[str, Any]]
    _caller: Callable[[str | None], Caller]

    def caller(self, username: str | None = None) -> Caller:
        """The system owner, or the person `username` (a command's `--as USERNAME`) as the API
        sees them after logging in, no password asked: whoever runs this holds the database.
        Nobody of that name, or a disabled person, ends the command with exit status 2."""
        return self._caller(username)

    def call(self, path: str, params: Mapping[str, str], caller: Caller) -> dict[str, Any]:
        """The function at /api/json/<path>/ run in this process as `caller`: the same
        parameters, privilege check, handler and transaction as over HTTP; the whole envelope
        (`responses`, and `data` when its code is "200")."""
        return self._call(path, dict(params), caller)


@dataclass(frozen=True)
class Command:
    """`pbxcontrol NAME`, offered by a plugin module's `commands()`. Its output is the point:
    the log level is WARNING unless --log-level says otherwise."""

    name: str
    help: str  # one line, in `pbxcontrol --help`
    #: Adds the command's options and sets its description: for --help and shell completion
    #: too, so it reads no config and no database.
    arguments: Callable[[argparse.ArgumentParser], None]
    #: Does the work; returns the exit status.
    run: Callable[[CommandContext, argparse.Namespace], int]


def commands_of(module: ModuleType) -> list[Command]:
    """The commands a plugin module offers (none without `commands()`)."""
    offer = getattr(module, "commands", None)
    if offer is None:
        return []
    found = list(offer()) if callable(offer) else None
    if found is None or not all(isinstance(command, Command) for command in found):
        raise PluginError(f"{module.__name__}: commands() must return Commands")
    return found


@dataclass(frozen=True)
class ConfigNotice:
    """What a plugin's `check_config` says of a key of its section: a problem, or with
    `deprecated` a warning (an old name that still works)."""

    key: str
    message: str
    deprecated: bool = False


def config_notices(module: ModuleType, values: Mapping[str, str]) -> list[ConfigNotice]:
    """A plugin's notices on its section's values (none without `check_config`)."""
    check = getattr(module, "check_config", None)
    return list(check(values)) if callable(check) else []


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
