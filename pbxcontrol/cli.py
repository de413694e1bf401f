"""The `pbxcontrol` command: parses arguments and hands them to pbxcontrol.runtime."""

from __future__ import annotations

import argparse
import sys

from pbxcontrol import __version__, runtime
from pbxcontrol.config import ConfigError
from pbxcontrol.plugin import PluginError

EXIT_USAGE = 2


def parser() -> argparse.ArgumentParser:
    """Every command and argument, in one place."""
    top = argparse.ArgumentParser(
        prog="pbxcontrol",
        description="Records Asterisk call legs from ARI into SQL and serves an "
        "Enswitch-compatible JSON API.",
    )
    top.add_argument(
        "--config", metavar="FILE", help="INI config file (default: $PBXCONTROL_CONFIG)"
    )
    top.add_argument("--log-level", metavar="LEVEL", help="override [logging] level")
    top.add_argument("--version", action="version", version=f"pbxcontrol {__version__}")
    sub = top.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("serve", help="run the recorders and the HTTP API (the default)")
    sub.add_parser("record", help="run only the recorders")
    sub.add_parser("api", help="run only the HTTP API")
    sub.add_parser("initdb", help="create or upgrade the database schema")
    prov = sub.add_parser("provision", help="apply a provisioning document (JSON)")
    prov.add_argument("document", metavar="FILE.json")
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return run(args)
    except (ConfigError, runtime.StartupError, PluginError) as exc:
        print(f"pbxcontrol: error: {exc}", file=sys.stderr)
        return EXIT_USAGE


def run(args: argparse.Namespace) -> int:
    command = args.command or "serve"
    config = runtime.configure(args.config, args.log_level)
    if command == "initdb":
        print(runtime.initdb(config))
    elif command == "provision":
        print(runtime.provision(config, args.document))
    else:
        runtime.serve(
            config, http=command in ("serve", "api"), record=command in ("serve", "record")
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
