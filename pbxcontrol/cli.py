"""The `pbxcontrol` command: parses arguments and hands them to pbxcontrol.runtime and
pbxcontrol.ops."""

from __future__ import annotations

import argparse
import sys

import shtab

from pbxcontrol import __version__, runtime
from pbxcontrol.config import ConfigError
from pbxcontrol.plugin import PluginError

EXIT_USAGE = 2
TOOLS = ("calls", "status", "forget-machine")  # quiet by default: their output is the point
# The choices of `calls` are calls/active/list's, copied from its plugin
# (plugins/active_calls/params.py) for --help and shell completion: the core does not import
# a plugin (found through entry points, maybe not enabled), and the API validates them anyway.
# tests/core/test_cli_choices.py keeps the copies equal.
SORTS = [
    "cnumber",
    "ctype",
    "direction",
    "dnumber",
    "dtype",
    "machine",
    "peer",
    "scustomer",
    "snumber",
    "stype",
    "uniqueid",
    "start",
]
MATCHES = ("contains", "exact", "starts", "ends")


def parser() -> argparse.ArgumentParser:
    """Every command and argument, in one place."""
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
    prov = sub.add_parser("provision", help="apply a provisioning document (JSON)")
    prov.add_argument(
        "document", metavar="FILE.json", help="the document: customers, people, lines, ..."
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    prov.add_argument("--dry-run", action="store_true", help="report changes, write nothing")
    check = sub.add_parser("check-config", help="report every problem of a config file")
    check.add_argument(
        "file", metavar="FILE", nargs="?", help="the file (default: --config, $PBXCONTROL_CONFIG)"
    ).complete = shtab.FILE  # type: ignore[attr-defined]
    _calls_arguments(sub.add_parser("calls", help="the active calls, as a table"))
    status = sub.add_parser("status", help="per machine: recording?, holder, sync, legs, events")
    status.add_argument("--json", action="store_true", help="print JSON (for scripts)")
    forget = sub.add_parser(
        "forget-machine",
        help="end at once the live legs of a machine nobody records",
        description="End the live legs of machine N now, at its last lease renewal, as "
        "[recorder] forget_seconds does by itself (SPEC §12). Refused (exit status 2) while a "
        "recorder holds the machine.",
    )
    forget.add_argument("machine", metavar="N", type=int, help="the machine id ([asterisk:N])")
    return top


def _calls_arguments(calls: argparse.ArgumentParser) -> None:
    """The options of calls/active/list (SPEC §6), and how to show the answer."""
    calls.description = (
        "The active call legs, as calls/active/list answers them, run in this process as the "
        "system owner (or --as a person). Options are the API's parameters."
    )
    add = calls.add_argument
    add(
        "--customer",
        default="system",
        metavar="ID|all|recursive|system",
        help="whose legs (default: system, every leg)",
    )
    add("--recursive", action="store_true", help="with an ID: its descendants' legs too")
    add("--direction", choices=("in", "internal", "in_out", "out"), help="only this direction")
    add("--sort", choices=SORTS, help="sort by this field (default: start)")
    add("--descending", action="store_true", help="sort in descending order")
    add("--names", action="store_true", help="show the directory names of the numbers")
    add("--callid", metavar="CALLID", help="only the legs of this call")
    add("--phone", metavar="LINE", help="only legs from this telephone line (endpoint or number)")
    for part, what in (("s", "source"), ("c", "dialled"), ("d", "destination")):
        add(f"--{part}number", metavar="NUMBER", help=f"{what} number to match")
        add(f"--{part}match", choices=MATCHES, help=f"how --{part}number matches (contains)")
        add(f"--{part}type", metavar="TYPE", help=f"only this {what} type (phone, external, ...)")
    add("--count", action="store_true", help="only how many legs")
    add("--as", dest="as_user", metavar="USERNAME", help="see what this person sees")
    add(
        "--watch",
        nargs="?",
        const=1.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 1) until Ctrl-C",
    )
    add("--json", action="store_true", help="print the answer's data as JSON (for scripts)")


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, runtime.StartupError, PluginError) as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    from pbxcontrol import ops

    command = args.command or "serve"
    if command == "check-config":
        from pbxcontrol.ops.checkconfig import check_config

        return check_config(args.file or args.config)
    quiet = "WARNING" if command in TOOLS else None
    config = runtime.configure(args.config, args.log_level or quiet)
    try:
        if command == "calls":
            return _calls(config, args)
        if command == "status":
            from pbxcontrol.ops import status

            return status.show(config, as_json=args.json)
        if command == "forget-machine":
            from pbxcontrol.ops.forget import forget_machine

            print(forget_machine(config, args.machine))
            return 0
    except ops.OpsError as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if command == "initdb":
        print(runtime.initdb(config))
    elif command == "provision":
        print(runtime.provision(config, args.document, dry_run=args.dry_run))
    else:
        runtime.serve(
            config, http=command in ("serve", "api"), record=command in ("serve", "record")
        )
    return 0


def _calls(config, args: argparse.Namespace) -> int:
    from pbxcontrol.ops import calls

    listing = calls.ActiveCalls(config, args.as_user)
    try:
        params = calls.api_params(vars(args))
        return calls.show(listing, params, watch=args.watch, as_json=args.json)
    finally:
        listing.close()


if __name__ == "__main__":
    sys.exit(main())
