"""The `pbxcontrol` command: serve, record, api, initdb, provision."""

from __future__ import annotations

import argparse
import contextlib
import logging
import signal
import sys
import threading
from pathlib import Path

from pbxcontrol import __version__, logs, plugin
from pbxcontrol import config as config_mod
from pbxcontrol.config import Config, ConfigError

log = logging.getLogger("pbxcontrol")

EXIT_USAGE = 2


class Fatal(Exception):
    """An error for the operator: printed as one line, exit status 2."""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="pbxcontrol",
        description="Records Asterisk call legs from ARI into SQL and serves an "
        "Enswitch-compatible JSON API.",
    )
    parser.add_argument(
        "--config", metavar="FILE", help="INI config file (default: $PBXCONTROL_CONFIG)"
    )
    parser.add_argument("--log-level", metavar="LEVEL", help="override [logging] level")
    parser.add_argument("--version", action="version", version=f"pbxcontrol {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the recorders and the HTTP API (the default)")
    sub.add_parser("record", help="run only the recorders")
    sub.add_parser("api", help="run only the HTTP API")
    sub.add_parser("initdb", help="create or upgrade the database schema")
    prov = sub.add_parser("provision", help="apply a provisioning document (JSON)")
    prov.add_argument("document", metavar="FILE.json")
    args = parser.parse_args(argv)
    command = args.command or "serve"
    try:
        config = _load_config(args)
        logs.setup(args.log_level.upper() if args.log_level else config.log_level)
        if config_mod.world_readable(config.path):
            log.warning(
                "%s is readable by every user but holds passwords: chmod 0600 it", config.path
            )
        if command == "initdb":
            return _initdb(config)
        if command == "provision":
            return _provision(config, args.document)
        return _run(config, http=command in ("serve", "api"), record=command in ("serve", "record"))
    except (ConfigError, Fatal) as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _load_config(args) -> Config:
    path = config_mod.resolve_path(args.config)
    config = config_mod.load(path, known_plugins=plugin.available())
    if args.log_level and args.log_level.upper() not in config_mod.LOG_LEVELS:
        raise Fatal(
            f"--log-level: {args.log_level!r} is not one of {', '.join(config_mod.LOG_LEVELS)}"
        )
    return config


def _initdb(config: Config) -> int:
    from pbxcontrol.db import migrate
    from pbxcontrol.db.engine import make_engine

    engine = make_engine(config.database_url)
    try:
        before = migrate.current_revision(engine)
        migrate.upgrade(engine)
        after = migrate.current_revision(engine)
    except Exception as exc:
        raise Fatal(f"initdb failed: {str(exc).splitlines()[0]}") from None
    finally:
        engine.dispose()
    if before == after:
        print(f"database schema is up to date (revision {after})")
    else:
        print(f"database schema upgraded from {before or 'empty'} to revision {after}")
    return 0


def _provision(config: Config, document: str) -> int:
    from pbxcontrol import provisioning
    from pbxcontrol.runtime import StartupError, open_database

    try:
        text = Path(document).read_bytes()
    except OSError as exc:
        raise Fatal(f"{document}: cannot read: {exc.strerror}") from None
    try:
        doc = provisioning.load_document(text)
        engine, sessions = open_database(config)
    except provisioning.ProvisioningError as exc:
        raise Fatal(f"{document}: {exc}") from None
    except StartupError as exc:
        raise Fatal(str(exc)) from None
    try:
        with sessions.begin() as session:
            summary = provisioning.apply(session, doc)
    except provisioning.ProvisioningError as exc:
        raise Fatal(f"{document}: {exc}") from None
    finally:
        engine.dispose()
    print(f"provisioned {summary}")
    return 0


def _limit_malloc_arenas(arenas: int = 2) -> None:
    """glibc gives each thread its own malloc arena; with 8 HTTP threads churning through
    answers the heap grew in 16 MB steps (soak: 68 -> 225 MB). Two arenas kept it at ~126 MB.
    Must run before any thread starts; a no-op where libc is not glibc."""
    import ctypes

    m_arena_max = -8
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").mallopt(m_arena_max, arenas)


def _run(config: Config, *, http: bool, record: bool) -> int:
    from pbxcontrol.runtime import StartupError, build

    _limit_malloc_arenas()

    stopping = threading.Event()
    server = None

    def on_signal(signum, _frame):
        if stopping.is_set():
            return
        log.info("%s received: stopping", signal.Signals(signum).name)
        stopping.set()
        if server is not None:
            raise KeyboardInterrupt  # breaks waitress out of its loop, which then drains

    # Installed before anything starts, so a signal during start-up stops cleanly too.
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        rt = build(config, http=http, record=record)
    except (StartupError, plugin.PluginError) as exc:
        raise Fatal(str(exc)) from None
    workers: list[int] = []
    try:
        if http:
            from pbxcontrol.http import server as http_server

            try:
                sock = http_server.listen(config.http_host, config.http_port)
            except OSError as exc:
                raise Fatal(
                    f"cannot listen on {config.http_host}:{config.http_port}: {exc.strerror}"
                ) from None
            # Fork before any thread starts (the recorders below): forking a threaded
            # process is unsafe.
            workers = http_server.fork_workers(
                rt.app, sock, config.http_threads, config.http_processes - 1, rt.engine
            )
            created = http_server.make_server(rt.app, sock, config.http_threads)
        for recorder in rt.recorders:
            recorder.start()
        if http:
            server = created
            if not stopping.is_set():
                with contextlib.suppress(KeyboardInterrupt):
                    server.run()
            server.close()
        else:
            stopping.wait()
    finally:
        if workers:
            from pbxcontrol.http.server import stop_workers

            stop_workers(workers)
        rt.close()
    log.info("stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
