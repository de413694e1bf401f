"""INI configuration: parsed once, validated, turned into typed values."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from pbxcontrol.auth.proxy import Network, parse_networks
from pbxcontrol.inifile import ConfigError, IniReader, parse_file, unread_names

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
LOG_FORMATS = ("text", "json")
_MACHINE_SECTION = re.compile(r"^asterisk:(\d+)$")


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
    batch_size: int = 1000
    history_days: int = 30
    heartbeat: float = 2.0  # seconds between a recorder's status writes (`pbxcontrol status`)
    login_failures_per_user: int = 10
    login_failures_per_address: int = 50
    login_window: float = 300.0
    token_lifetime: int = 3600  # seconds a user/login token is valid
    streams_per_person: int = 20  # concurrent live streams of one person (429 beyond)
    journal_seconds: float = 600.0  # how long the change journal keeps entries (stream resume)
    takeover_seconds: float = 5.0  # a standby recorder records within this after a fault
    trusted_proxies: tuple[Network, ...] = ()  # peers whose X-Forwarded-For is honoured
    plugin_sections: dict[str, dict[str, str]] = field(default_factory=dict)
    log_format: str = "text"
    #: [database] connect_timeout (per host of a multi-host URL) and statement_timeout, seconds.
    connect_timeout: int = 3
    statement_timeout: int = 5

    def plugin_section(self, name: str) -> dict[str, str]:
        return dict(self.plugin_sections.get(name, {}))


READABLE = "is readable by every user but holds passwords: chmod 0600 it"


def world_readable(path: str) -> bool:
    """The file holds ARI (and perhaps database) passwords: it should be 0600."""
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False


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
    default), and so is a file every user may read. [plugin:NAME] values are the plugin's to
    check when it starts."""
    reader, problems = parse_file(path, keep_going=True)
    if reader is None:
        return [str(p) for p in problems]
    _build(reader, known_plugins)
    problems += reader.problems + unread_names(reader, known_plugins)
    if world_readable(path):
        problems.append(ConfigError(path, None, None, READABLE))
    return [str(p) for p in problems]


def _build(r: IniReader, known_plugins: frozenset[str] | None) -> Config:
    url = r.required("database", "url")
    if url is not None and "://" not in url:
        r.problem("database", "url", f"{url!r} is not an SQLAlchemy URL")
    plugins = tuple(n.strip() for n in r.get("plugins", "enabled", "").split(",") if n.strip())
    if known_plugins is not None:
        for name in plugins:
            if name not in known_plugins:
                r.problem("plugins", "enabled", f"unknown plugin {name!r}")
    level = r.get("logging", "level", "INFO").upper()
    if level not in LOG_LEVELS:
        r.problem("logging", "level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
        level = "INFO"
    log_format = r.choice("logging", "format", "text", LOG_FORMATS)
    found = [_machine(r, s) for s in r.parser.sections() if s.startswith("asterisk")]
    machines = tuple(m for m in found if m is not None)
    apps = [m.app for m in machines]
    for m in machines:
        if apps.count(m.app) > 1:
            r.problem(f"asterisk:{m.id}", "app", f"{m.app!r} is used by another machine")
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
        batch_size=r.integer("recorder", "batch_size", 1000, lo=1, hi=100000),
        history_days=r.integer("recorder", "history_days", 30, lo=0),
        heartbeat=r.number("recorder", "heartbeat", 2.0),
        journal_seconds=r.number("recorder", "journal_seconds", 600.0),
        takeover_seconds=_takeover(r),
        streams_per_person=r.integer("http", "streams_per_person", 20, lo=1, hi=100000),
        login_failures_per_user=r.integer("http", "login_failures_per_user", 10, lo=1),
        login_failures_per_address=r.integer("http", "login_failures_per_address", 50, lo=1),
        login_window=r.number("http", "login_window", 300.0),
        token_lifetime=r.integer("http", "token_lifetime", 3600, lo=1, hi=30 * 86400),
        trusted_proxies=_networks(r, "http", "trusted_proxies"),
        plugin_sections={
            s.split(":", 1)[1]: dict(r.parser.items(s))
            for s in r.parser.sections()
            if s.startswith("plugin:")
        },
        log_format=log_format,
        connect_timeout=r.integer("database", "connect_timeout", 3, lo=2, hi=60),
        statement_timeout=r.integer("database", "statement_timeout", 5, lo=1, hi=3600),
    )


def _networks(r: IniReader, section: str, key: str) -> tuple[Network, ...]:
    try:
        return parse_networks(r.get(section, key, ""))
    except ValueError as exc:
        r.problem(section, key, str(exc))
        return ()


def _takeover(r: IniReader) -> float:
    """Seconds from a holder's fault to a standby recording (SPEC §10). Below 1 s a busy
    writer or a slow database round trip would pass for a dead holder."""
    value = r.number("recorder", "takeover_seconds", 5.0)
    if not 1.0 <= value <= 3600.0:
        r.problem("recorder", "takeover_seconds", f"{value:g} is not between 1 and 3600")
        return 5.0
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
    )
