"""The `pbxcontrol` command: parses arguments and hands them to pbxcontrol.runtime and
pbxcontrol.ops."""

from __future__ import annotations

import argparse
import os
import sys

import shtab

from pbxcontrol import __version__, database, runtime
from pbxcontrol.config import ConfigError
from pbxcontrol.db.outage import DatabaseUnavailable
from pbxcontrol.ops import commands
from pbxcontrol.plugin import PluginError

EXIT_USAGE = 2  # a configuration error: restarting cannot fix it
EXIT_UNAVAILABLE = 1  # the database does not answer now (a tool, initdb): try again later
#: Quiet by default, as every plugin's command is: their output is the point.
TOOLS = ("backup", "status", "rotate-token-key", "forget-machine")


def parser() -> argparse.ArgumentParser:
    """Every command and argument, in one place (a plugin's command adds its own)."""
    top = argparse.ArgumentParser(
        prog="pbxcontrol",
        description="Records Asterisk call legs from ARI into SQL and serves an "
        "Enswitch-compatible JSON API.",
    )
    shtab.add_argument_to(top, "--print-completion", help="print a shell completion script")
    top.add_argument(
        "--config", metavar="FILE", help="INI config file (default: $PBXCONTROL_CONFIG)"
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    top.add_argument("--log-level", metavar="LEVEL", help="override [logging] level")
    top.add_argument("--version", action="version", version=f"pbxcontrol {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND", help="what to do (default: serve)")
    sub.add_parser("serve", help="run the recorders and the HTTP API (the default)")
    sub.add_parser("record", help="run only the recorders")
    sub.add_parser("api", help="run only the HTTP API")
    sub.add_parser("initdb", help="create or upgrade the database schema")
    rotate = sub.add_parser(
        "rotate-token-key",
        help="add a token signing key that signs from now on (no restart needed)",
        description="Add a token signing key. Every API process signs with it within seconds; "
        "tokens signed by the previous keys keep working until they expire.",
    )
    rotate.add_argument(
        "--drop-old",
        action="store_true",
        help="also drop every previous key: every token issued so far stops working (a leak)",
    )
    prov = sub.add_parser("provision", help="apply a provisioning document (JSON)")
    prov.add_argument(
        "document", metavar="FILE.json", help="the document: customers, people, lines, ..."
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    prov.add_argument("--dry-run", action="store_true", help="report changes, write nothing")
    check = sub.add_parser("check-config", help="report every problem of a config file")
    check.add_argument(
        "file", metavar="FILE", nargs="?", help="the file (default: --config, $PBXCONTROL_CONFIG)"
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    backup = sub.add_parser(
        "backup", help="copy the SQLite database while the service runs (consistent, 0600)"
    )
    backup.add_argument(
        "file", metavar="FILE", help="the copy to write (replaced if it exists)"
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    # The plugins' commands (`calls`, ...): their options come with them, choices included.
    for command in commands.offered(set(sub.choices) | set(TOOLS)):
        commands.add_parser(sub, command)
    _status_and_grants(sub)
    _forget_machine(sub)
    return top


def _forget_machine(sub: argparse._SubParsersAction) -> None:
    """`forget-machine` (SPEC §12)."""
    forget = sub.add_parser(
        "forget-machine",
        help="end at once the live legs of a machine nobody records",
        description="End the live legs of machine N now, at its last lease renewal, as "
        "[recorder] forget_seconds does by itself (SPEC §12). Refused (exit status 2) while a "
        "recorder holds the machine.",
    )
    forget.add_argument("machine", metavar="N", type=int, help="the machine id ([asterisk:N])")


def _status_and_grants(sub) -> None:
    status = sub.add_parser("status", help="per machine: recording?, holder, sync, legs, events")
    status.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    grants = sub.add_parser(
        "grants",
        help="print the least-privilege SQL for a recorder and an API role (PostgreSQL)",
        description="Prints the GRANTs (for existing roles; a superuser or the tables' owner "
        "applies them) that let the recorder role write what recording needs and read nothing "
        "of people, passwords or token keys, and the API role the rest. Needs no config.",
    )
    grants.add_argument("--record", required=True, metavar="ROLE", help="the recorders' role")
    grants.add_argument("--api", required=True, metavar="ROLE", help="the API processes' role")
    grants.add_argument("--schema", default="public", help="the tables' schema (public)")


def main(argv: list[str] | None = None) -> int:
    # Everything the service creates (the SQLite database, its WAL and shared memory, any
    # file an operator tool writes) holds secrets: no group or other bits (SPEC §13).
    os.umask(0o077)
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, database.StartupError, PluginError) as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return getattr(exc, "status", EXIT_USAGE)
    except DatabaseUnavailable as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return EXIT_UNAVAILABLE


def run(args: argparse.Namespace) -> int:
    from pbxcontrol import ops

    command = args.command or "serve"
    if command == "grants":
        from pbxcontrol.ops.grants import print_grants

        return print_grants(args.record, args.api, args.schema)
    if command == "check-config":
        from pbxcontrol.ops.checkconfig import check_config

        return check_config(args.file or args.config)
    offered = getattr(args, "plugin_command", None)
    quiet = "WARNING" if command in TOOLS or offered is not None else None
    config = runtime.configure(args.config, args.log_level or quiet)
    try:
        if offered is not None:
            return commands.run(offered, config, args)
        if command == "status":
            from pbxcontrol.ops import status

            return status.show(config, as_json=args.json)
        if command == "forget-machine":
            from pbxcontrol.ops.forget import forget_machine

            print(forget_machine(config, args.machine))
            return 0
        if command == "rotate-token-key":
            from pbxcontrol.ops import tokenkey

            print(tokenkey.rotate(config, drop_all=args.drop_old))
            return 0
        if command == "backup":
            from pbxcontrol.ops import backup

            print(backup.backup(config, args.file))
            return 0
    except ops.OpsError as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "initdb":
        print(database.initdb(config))
    elif command == "provision":
        print(runtime.provision(config, args.document, dry_run=args.dry_run))
    else:
        runtime.serve(
            config, http=command in ("serve", "api"), record=command in ("serve", "record")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
