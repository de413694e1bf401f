"""`pbxcontrol check-config`: every problem of a config file, one per line."""

from __future__ import annotations

import sys
from typing import TextIO

from pbxcontrol import config as config_mod
from pbxcontrol import plugin
from pbxcontrol.inifile import parse_file


def check_config(path: str | None, out: TextIO = sys.stdout) -> int:
    """Print each problem of the file at `path` (else $PBXCONTROL_CONFIG), or "FILE: OK".
    Exit status 0 when there is none, 2 otherwise."""
    try:
        resolved = config_mod.resolve_path(path)
    except config_mod.ConfigError as exc:
        print(exc, file=out)
        return 2
    problems = config_mod.check(resolved, known_plugins=plugin.available())
    warnings: list[str] = []
    for notice_line, deprecated in _plugin_notices(resolved):
        (warnings if deprecated else problems).append(notice_line)
    for line in problems + warnings:
        print(line, file=out)
    if problems:
        return 2
    print(f"{resolved}: OK", file=out)
    return 0


def _plugin_notices(path: str) -> list[tuple[str, bool]]:
    """What each enabled plugin's `check_config` says of its section: (line, deprecated)."""
    reader, _ = parse_file(path, keep_going=True)
    if reader is None:
        return []
    enabled = reader.parser.get("plugins", "enabled", fallback="")
    found = []
    for name in (n.strip() for n in enabled.split(",")):
        section = f"plugin:{name}"
        if name not in plugin.available():
            continue  # config.check named it
        values = dict(reader.parser.items(section)) if reader.parser.has_section(section) else {}
        for notice in plugin.config_notices(plugin.load(name), values):
            word = "deprecated: " if notice.deprecated else ""
            line = f"{path}: [{section}] {notice.key}: {word}{notice.message}"
            found.append((line, notice.deprecated))
    return found
