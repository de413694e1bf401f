"""INI configuration: parsed once, validated, turned into typed values."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from pbxcontrol.auth.proxy import Network, parse_networks
from pbxcontrol.inifile import ConfigError, IniReader, parse_file, unread_names

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_MACHINE_SECTION = re.compile(r"^asterisk:(\d+)$")
OPS_ALLOW = "127.0.0.1, ::1"
MIB = 1024 * 1024


@dataclass(frozen=True)
class MachineConfig:
    id: int
    ari_url: str
    username: str
    password: str = field(repr=False)
    app: str
    subscribe_all: bool = True
    sweep_interval: float = 60.0
    ping_interval: float = 5.0
    ping_timeout: float = 10.0
    #: A websocket message from Asterisk larger than this (bytes) closes the websocket and
    #: resyncs the machine, instead of being buffered whatever its size (SPEC §12).
    max_message: int = 16 * 1024 * 1024


@dataclass(frozen=True)
class Config:
    path: str
    database_url: str
    http_host: str
    http_port: int
    http_threads: int
    http_processes: int
    log_level: str
    plugins: tuple[str, ...]
    machines: tuple[MachineConfig, ...]
    batch_size: int = 20000
    backlog_megabytes: int = 256  # the reader-to-writer queue's bound, per machine
    history_days: int = 30
    audit_days: int = 365  # days the call-control audit (call_actions) keeps its rows
    heartbeat: float = 2.0  # seconds between a recorder's status writes (`pbxcontrol status`)
    login_failures_per_user: int = 10
    login_failures_per_address: int = 50
    login_window: float = 300.0
    login_slow_down_after: int = 100  # failures of one username from everywhere (SPEC §13)
    token_lifetime: int = 3600  # seconds a user/login token is valid
    streams_per_person: int = 20  # concurrent live streams of one person (429 beyond)
    journal_seconds: float = 600.0  # how long the change journal keeps entries (stream resume)
    takeover_seconds: float = 5.0  # a standby recorder records within this after a fault
    #: Seconds after its last renewal that a machine nobody records has its legs ended.
    forget_seconds: float = 3600.0
    #: Bytes of events that may wait for a stream's client before the stream is dropped.
    stream_buffer: int = 4 * 1024 * 1024
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For is honoured
    #: Clients of /health and /metrics (SPEC §13).
    ops_allow: tuple[Network, ...] = parse_networks(OPS_ALLOW)
    plugin_sections: dict[str, dict[str, str]] = field(default_factory=dict)
    log_format: str = "text"
    #: [database] connect_timeout (per host of a multi-host URL) and statement_timeout, seconds.
    connect_timeout: int = 3
    statement_timeout: int = 5

    def plugin_section(self, name: str) -> dict[str, str]:
        return dict(self.plugin_sections.get(name, {}))


READABLE = "is readable by every user but holds passwords: chmod 0600 it"
DB_READABLE = "is readable by every user but holds password hashes and the token signing key"


def world_readable(path: str) -> bool:
    """The file holds ARI (and perhaps database) passwords: it should be 0600."""
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False


def sqlite_files(url: str) -> list[str]:
    """The files of a SQLite database URL (the database, its WAL and shared memory); [] for
    another engine or an in-memory database."""
    if not url.startswith("sqlite"):  # libpq's several hosts are no URL SQLAlchemy parses
        return []
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return []
    path = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or path in ("", ":memory:"):
        return []
    return [path, f"{path}-wal", f"{path}-shm"]


def readable_secrets(config_path: str, database_url: str) -> list[ConfigError]:
    """The config file and the SQLite database's files that every user may read (SPEC §13),
    one problem each: its file, and the chmod that mends it."""
    found = [ConfigError(config_path, None, None, READABLE)] if world_readable(config_path) else []
    for path in sqlite_files(database_url):
        if world_readable(path):
            found.append(ConfigError(path, None, None, f"{DB_READABLE}: chmod 0600 {path}"))
    return found


def resolve_path(cli_path: str | None) -> str:
    path = cli_path or os.environ.get("PBXCONTROL_CONFIG")
    if not path:
        raise ConfigError(
            "(no config)",
            None,
            None,
            "no config file given: use --config FILE or set PBXCONTROL_CONFIG",
        )
    return path


def load(path: str, known_plugins: frozenset[str] | None = None) -> Config:
    """The config of `path`; the first problem found is raised as ConfigError."""
    reader, problems = parse_file(path)
    if reader is None:
        raise problems[0]
    config = _build(reader, known_plugins)
    if reader.problems:
        raise reader.problems[0]
    return config


def check(path: str, known_plugins: frozenset[str] | None = None) -> list[str]:
    """Every problem in the config file at `path`, one line each ("FILE: [section] key: what"):
    syntax first, then values, then names nobody reads; [] when all is well. Stricter than
    `load`: unknown sections and keys are problems (a typo would silently fall back to the
    default), and so is the config or a SQLite database file every user may read.
    [plugin:NAME] values are the plugin's to check when it starts."""
    reader, problems = parse_file(path, keep_going=True)
    if reader is None:
        return [str(p) for p in problems]
    built = _build(reader, known_plugins)
    problems += reader.problems + unread_names(reader, known_plugins)
    problems += readable_secrets(path, built.database_url)
    return [str(p) for p in problems]


def _build(r: IniReader, known_plugins: frozenset[str] | None) -> Config:
    url = r.required("database", "url")
    if url is not None and "://" not in url:
        r.problem("database", "url", f"{url!r} is not an SQLAlchemy URL")
    plugins = _plugins(r, known_plugins)
    level = r.get("logging", "level", "INFO").upper()
    if level not in LOG_LEVELS:
        r.problem("logging", "level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
        level = "INFO"
    log_format = r.choice("logging", "format", "text", LOG_FORMATS)
    machines = _machines(r)
    return Config(
        path=r.path,
        database_url=url or "",
        http_host=r.get("http", "host", "127.0.0.1"),
        http_port=r.integer("http", "port", 8090, lo=0, hi=65535),
        http_threads=r.integer("http", "threads", 8, lo=1, hi=256),
        http_processes=r.integer("http", "processes", 1, lo=1, hi=64),
        log_level=level,
        plugins=plugins,
        machines=machines,
        batch_size=r.integer("recorder", "batch_size", 20000, lo=1, hi=1000000),
        backlog_megabytes=r.integer("recorder", "backlog_megabytes", 256, lo=1, hi=16384),
        history_days=r.integer("recorder", "history_days", 30, lo=0),
        audit_days=r.integer("recorder", "audit_days", 365, lo=0),
        heartbeat=r.number("recorder", "heartbeat", 2.0),
        journal_seconds=r.number("recorder", "journal_seconds", 600.0),
        takeover_seconds=(takeover := _takeover(r)),
        forget_seconds=_forget(r, takeover),
        stream_buffer=r.integer("http", "stream_buffer", 4 * MIB, lo=64 * 1024, hi=1024 * MIB),
        streams_per_person=r.integer("http", "streams_per_person", 20, lo=1, hi=100000),
        login_failures_per_user=r.integer("http", "login_failures_per_user", 10, lo=1),
        login_failures_per_address=r.integer("http", "login_failures_per_address", 50, lo=1),
        login_window=r.number("http", "login_window", 300.0),
        login_slow_down_after=r.integer("http", "login_slow_down_after", 100, lo=1),
        token_lifetime=r.integer("http", "token_lifetime", 3600, lo=1, hi=30 * 86400),
        trusted_proxies=_networks(r, "http", "trusted_proxies"),
        ops_allow=_networks(r, "http", "ops_allow", OPS_ALLOW),
        plugin_sections={
            s.split(":", 1)[1]: dict(r.parser.items(s))
            for s in r.parser.sections()
            if s.startswith("plugin:")
        },
        log_format=log_format,
        connect_timeout=r.integer("database", "connect_timeout", 3, lo=2, hi=60),
        statement_timeout=r.integer("database", "statement_timeout", 5, lo=1, hi=3600),
    )


def _plugins(r: IniReader, known_plugins: frozenset[str] | None) -> tuple[str, ...]:
    """[plugins] enabled: the names, each known (when the caller knows the installed ones)."""
    plugins = tuple(n.strip() for n in r.get("plugins", "enabled", "").split(",") if n.strip())
    if known_plugins is not None:
        for name in (n for n in plugins if n not in known_plugins):
            r.problem("plugins", "enabled", f"unknown plugin {name!r}")
    return plugins


def _machines(r: IniReader) -> tuple[MachineConfig, ...]:
    """The [asterisk:N] sections; each app name is one connection's (a second replaces it)."""
    found = [_machine(r, s) for s in r.parser.sections() if s.startswith("asterisk")]
    machines = tuple(m for m in found if m is not None)
    apps = [m.app for m in machines]
    for m in machines:
        if apps.count(m.app) > 1:
            r.problem(f"asterisk:{m.id}", "app", f"{m.app!r} is used by another machine")
    return machines


def _networks(r: IniReader, section: str, key: str, default: str = "") -> tuple[Network, ...]:
    try:
        return parse_networks(r.get(section, key, default))
    except ValueError as exc:
        r.problem(section, key, str(exc))
        return parse_networks(default)


def _takeover(r: IniReader) -> float:
    """Seconds from a holder's fault to a standby recording (SPEC §10). Below 1 s a busy
    writer or a slow database round trip would pass for a dead holder."""
    value = r.number("recorder", "takeover_seconds", 5.0)
    if not 1.0 <= value <= 3600.0:
        r.problem("recorder", "takeover_seconds", f"{value:g} is not between 1 and 3600")
        return 5.0
    return value


def _forget(r: IniReader, takeover: float) -> float:
    """Seconds from a machine's last renewal to its legs being ended (SPEC §12): no shorter
    than the 2 x takeover_seconds after which they are flagged, at most 30 days."""
    value = r.number("recorder", "forget_seconds", 3600.0)
    if not 2 * takeover <= value <= 30 * 86400:
        r.problem(
            "recorder",
            "forget_seconds",
            f"{value:g} is not between 2 x takeover_seconds ({2 * takeover:g}) and 2592000",
        )
        return max(3600.0, 2 * takeover)
    return value


def _machine(r: IniReader, section: str) -> MachineConfig | None:
    match = _MACHINE_SECTION.match(section)
    if not match or int(match.group(1)) < 1:
        r.problem(section, None, "machine sections are named [asterisk:N], N a positive id")
        return None
    url = (r.required(section, "ari_url") or "").rstrip("/")
    parts = urlsplit(url)
    if url and (parts.scheme not in ("http", "https") or not parts.netloc):
        r.problem(section, "ari_url", f"{url!r} is not an http(s) URL")
    app = r.get(section, "app", f"pbxcontrol-{match.group(1)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", app):
        r.problem(section, "app", f"{app!r} may hold only letters, digits, '_', '.', '-'")
    return MachineConfig(
        id=int(match.group(1)),
        ari_url=url,
        username=r.required(section, "username") or "",
        password=r.required(section, "password") or "",
        app=app,
        subscribe_all=r.boolean(section, "subscribe_all", True),
        sweep_interval=r.number(section, "sweep_interval", 60.0),
        ping_interval=r.number(section, "ping_interval", 5.0),
        ping_timeout=r.number(section, "ping_timeout", 10.0),
        max_message=r.integer(section, "max_message", 16 * MIB, lo=64 * 1024, hi=1024 * MIB),
    )
