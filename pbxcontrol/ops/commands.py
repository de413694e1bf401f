"""Plugins' commands (`pbxcontrol calls`, ...): found for the parser, run with a context."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial

from sqlalchemy import Engine

from pbxcontrol import database, plugin, runtime
from pbxcontrol.auth.authenticator import Caller
from pbxcontrol.config import Config
from pbxcontrol.ops import callers


def offered(taken: set[str]) -> list[plugin.Command]:
    """The commands of every installed plugin, enabled or not (the parser is built before the
    config is read), whose names are not in `taken`. A plugin that cannot be loaded offers
    none (a warning on stderr): it stops start-up only where it is enabled."""
    found: list[plugin.Command] = []
    for name in sorted(plugin.available()):
        try:
            commands = plugin.commands_of(plugin.load(name))
        except plugin.PluginError as exc:
            print(f"pbxcontrol: warning: {exc}; its commands are left out", file=sys.stderr)
            continue
        for command in commands:
            if command.name in taken:
                print(
                    f"pbxcontrol: warning: plugin {name!r}: command {command.name!r} is taken",
                    file=sys.stderr,
                )
                continue
            taken.add(command.name)
            found.append(command)
    return found


def add_parser(commands: argparse._SubParsersAction, command: plugin.Command) -> None:
    """`command`'s parser; the parsed arguments carry the command (`args.plugin_command`)."""
    parser = commands.add_parser(command.name, help=command.help)
    command.arguments(parser)
    parser.set_defaults(plugin_command=command)


@contextmanager
def context(config: Config) -> Iterator[plugin.CommandContext]:
    """A command's context: the database (closed after) and the JSON API with the enabled
    plugins, built as the service builds them but serving no HTTP."""
    engine, _sessions = database.open_database(config, create_if_empty=False)
    try:
        api = runtime.build_api(config, engine)
        yield plugin.CommandContext(api.call, partial(_caller, engine))
    finally:
        engine.dispose()


def run(command: plugin.Command, config: Config, args: argparse.Namespace) -> int:
    with context(config) as ctx:
        return command.run(ctx, args)


def _caller(engine: Engine, username: str | None) -> Caller:
    with engine.connect() as conn:
        return callers.person(conn, username) if username else callers.system_owner(conn)
