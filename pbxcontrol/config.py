"""INI configuration: parsed once, validated, turned into typed values."""

from __future__ import annotations

import configparser
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_MACHINE_SECTION = re.compile(r"^asterisk:(\d+)$")


class ConfigError(Exception):
    """A config problem, already phrased for one line of output: file, section, key."""

    def __init__(self, path: str, section: str | None, key: str | None, message: str):
        where = path
        if section:
            where += f": [{section}]"
        if key:
            where += f" {key}"
        super().__init__(f"{where}: {message}")


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
    batch_size: int = 200
    history_days: int = 30
    login_failures_per_user: int = 10
    login_failures_per_address: int = 50
    login_window: float = 300.0
    plugin_sections: dict[str, dict[str, str]] = field(default_factory=dict)

    def plugin_section(self, name: str) -> dict[str, str]:
        return dict(self.plugin_sections.get(name, {}))


class _Reader:
    """Typed access to one parsed file, raising ConfigError that names file/section/key."""

    def __init__(self, path: str, parser: configparser.ConfigParser):
        self.path = path
        self.parser = parser

    def error(self, section: str | None, key: str | None, message: str) -> ConfigError:
        return ConfigError(self.path, section, key, message)

    def get(self, section: str, key: str, default: str | None = None) -> str:
        if self.parser.has_option(section, key):
            return self.parser.get(section, key).strip()
        if default is None:
            raise self.error(section, key, "is required")
        return default

    def integer(
        self,
        section: str,
        key: str,
        default: int | None = None,
        *,
        lo: int = 0,
        hi: int | None = None,
    ) -> int:
        raw = self.get(section, key, None if default is None else str(default))
        try:
            value = int(raw)
        except ValueError:
            raise self.error(section, key, f"{raw!r} is not an integer") from None
        if value < lo or (hi is not None and value > hi):
            bounds = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
            raise self.error(section, key, f"{value} must be {bounds}")
        return value

    def number(self, section: str, key: str, default: float) -> float:
        raw = self.get(section, key, str(default))
        try:
            value = float(raw)
        except ValueError:
            raise self.error(section, key, f"{raw!r} is not a number") from None
        if not value > 0:
            raise self.error(section, key, f"{raw!r} must be greater than 0")
        return value

    def boolean(self, section: str, key: str, default: bool) -> bool:
        raw = self.get(section, key, "yes" if default else "no").lower()
        if raw in ("1", "yes", "true", "on"):
            return True
        if raw in ("0", "no", "false", "off"):
            return False
        raise self.error(section, key, f"{raw!r} is not a boolean (yes/no)")


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
    p = Path(path)
    if not p.is_file():
        raise ConfigError(path, None, None, "cannot read config file: no such file")
    parser = configparser.ConfigParser(
        inline_comment_prefixes=(";", "#"), interpolation=None, strict=True
    )
    try:
        with p.open(encoding="utf-8") as fh:
            parser.read_file(fh)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(path, None, None, f"cannot read config file: {exc}") from None
    except configparser.DuplicateOptionError as exc:
        raise ConfigError(path, exc.section, exc.option, "is given twice") from None
    except configparser.DuplicateSectionError as exc:
        raise ConfigError(path, exc.section, None, "section is given twice") from None
    except configparser.Error as exc:
        first = str(exc).splitlines()[0]
        raise ConfigError(path, None, None, f"not a valid INI file: {first}") from None
    return _build(_Reader(path, parser), known_plugins)


def _build(r: _Reader, known_plugins: frozenset[str] | None) -> Config:
    url = r.get("database", "url")
    if "://" not in url:
        raise r.error("database", "url", f"{url!r} is not an SQLAlchemy URL")
    plugins = tuple(n.strip() for n in r.get("plugins", "enabled", "").split(",") if n.strip())
    if known_plugins is not None:
        for name in plugins:
            if name not in known_plugins:
                raise r.error("plugins", "enabled", f"unknown plugin {name!r}")
    level = r.get("logging", "level", "INFO").upper()
    if level not in LOG_LEVELS:
        raise r.error("logging", "level", f"{level!r} is not one of {', '.join(LOG_LEVELS)}")
    machines = tuple(_machine(r, s) for s in r.parser.sections() if s.startswith("asterisk"))
    apps = [m.app for m in machines]
    for m in machines:
        if apps.count(m.app) > 1:
            raise r.error(f"asterisk:{m.id}", "app", f"{m.app!r} is used by another machine")
    return Config(
        path=r.path,
        database_url=url,
        http_host=r.get("http", "host", "127.0.0.1"),
        http_port=r.integer("http", "port", 8090, lo=0, hi=65535),
        http_threads=r.integer("http", "threads", 8, lo=1, hi=256),
        http_processes=r.integer("http", "processes", 1, lo=1, hi=64),
        log_level=level,
        plugins=plugins,
        machines=machines,
        batch_size=r.integer("recorder", "batch_size", 200, lo=1, hi=100000),
        history_days=r.integer("recorder", "history_days", 30, lo=0),
        login_failures_per_user=r.integer("http", "login_failures_per_user", 10, lo=1),
        login_failures_per_address=r.integer("http", "login_failures_per_address", 50, lo=1),
        login_window=r.number("http", "login_window", 300.0),
        plugin_sections={
            s.split(":", 1)[1]: dict(r.parser.items(s))
            for s in r.parser.sections()
            if s.startswith("plugin:")
        },
    )


def _machine(r: _Reader, section: str) -> MachineConfig:
    match = _MACHINE_SECTION.match(section)
    if not match or int(match.group(1)) < 1:
        raise r.error(section, None, "machine sections are named [asterisk:N], N a positive id")
    url = r.get(section, "ari_url").rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise r.error(section, "ari_url", f"{url!r} is not an http(s) URL")
    app = r.get(section, "app", f"pbxcontrol-{match.group(1)}")
    if not re.fullmatch(r"[A-Za-z0-9_.-]+", app):
        raise r.error(section, "app", f"{app!r} may hold only letters, digits, '_', '.', '-'")
    return MachineConfig(
        id=int(match.group(1)),
        ari_url=url,
        username=r.get(section, "username"),
        password=r.get(section, "password"),
        app=app,
        subscribe_all=r.boolean(section, "subscribe_all", True),
        sweep_interval=r.number(section, "sweep_interval", 60.0),
        ping_interval=r.number(section, "ping_interval", 5.0),
        ping_timeout=r.number(section, "ping_timeout", 10.0),
    )
