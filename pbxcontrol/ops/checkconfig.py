"""`pbxcontrol check-config`: every problem of a config file, one per line."""

from __future__ import annotations

import sys
from typing import TextIO

from pbxcontrol import config as config_mod
from pbxcontrol import plugin


def check_config(path: str | None, out: TextIO = sys.stdout) -> int:
    """Print each problem of the file at `path` (else $PBXCONTROL_CONFIG), or "FILE: OK".
    Exit status 0 when there is none, 2 otherwise."""
    try:
        resolved = config_mod.resolve_path(path)
    except config_mod.ConfigError as exc:
        print(exc, file=out)
        return 2
    problems = config_mod.check(resolved, known_plugins=plugin.available())
    for problem in problems:
        print(problem, file=out)
    if problems:
        return 2
    print(f"{resolved}: OK", file=out)
    return 0
