"""The composition root: builds engine, sessions, HTTP app, plugins and recorders from config."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import bottle
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol import plugin
from pbxcontrol.config import Config
from pbxcontrol.db import migrate
from pbxcontrol.db.engine import make_engine, make_sessionmaker
from pbxcontrol.http.api import JsonApi, build_app
from pbxcontrol.http.auth import Authenticator
from pbxcontrol.http.throttle import LoginThrottle

log = logging.getLogger("pbxcontrol")


class StartupError(Exception):
    """Start-up cannot go on; the message is for the operator."""


@dataclass
class Runtime:
    config: Config
    engine: Engine
    sessions: sessionmaker[Session]
    api: JsonApi | None = None
    app: bottle.Bottle | None = None
    recorders: list = field(default_factory=list)

    def close(self) -> None:
        for recorder in self.recorders:
            recorder.stop()
        self.engine.dispose()


def open_database(config: Config, *, create_if_empty: bool = True) -> tuple[Engine, sessionmaker]:
    # One pooled connection per HTTP worker thread and recorder (plus spare): with the default
    # pool of 5, 8 waitress threads overflow and open/close a connection (and rerun the SQLite
    # pragmas) on most requests.
    engine = make_engine(
        config.database_url, pool_size=config.http_threads + len(config.machines) + 2
    )
    try:
        current = migrate.current_revision(engine)
        if current is None and create_if_empty:
            log.info("empty database: creating the schema")
            migrate.upgrade(engine)
        elif current != migrate.head_revision():
            raise StartupError(
                f"database schema is at revision {current}, this version needs "
                f"{migrate.head_revision()}: run `pbxcontrol initdb` to upgrade"
            )
    except StartupError:
        engine.dispose()
        raise
    except Exception as exc:
        engine.dispose()
        raise StartupError(f"cannot open database: {_first_line(exc)}") from exc
    return engine, make_sessionmaker(engine)


def build(config: Config, *, http: bool = True, record: bool = True) -> Runtime:
    engine, sessions = open_database(config)
    rt = Runtime(config, engine, sessions)
    if http:
        throttle = LoginThrottle(
            engine,
            config.login_failures_per_user,
            config.login_failures_per_address,
            config.login_window,
        )
        rt.api = JsonApi(sessions, Authenticator(sessions, throttle=throttle))
        for name in config.plugins:
            module = plugin.load(name)
            ctx = plugin.PluginContext(
                name=name,
                config=config.plugin_section(name),
                sessions=sessions,
                log=logging.getLogger(f"pbxcontrol.plugins.{name}"),
                _api=rt.api,
            )
            try:
                module.setup(ctx)
            except Exception as exc:
                raise plugin.PluginError(f"plugin {name!r} failed to set up: {exc}") from exc
            log.info("plugin %s enabled", name)
        rt.app = build_app(rt.api)
    if record:
        from pbxcontrol.recorder.service import build_recorders

        rt.recorders = build_recorders(config, sessions)
    return rt


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
