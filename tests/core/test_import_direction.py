"""Layers import downward: the leg's field table and db/ import nothing of the recorder or the
HTTP API, and nothing in recorder/ parses JSON (ari/ turns ARI's JSON into typed values)."""

from __future__ import annotations

import ast
from pathlib import Path

from pbxcontrol.ari.events import is_application_replaced

PACKAGE = Path(__file__).resolve().parents[2] / "pbxcontrol"
ABOVE_THE_DATABASE = ("pbxcontrol.recorder", "pbxcontrol.http")


def imports_of(path: Path) -> set[str]:
    """Every module `path` imports (`from X import y` counted as X and X.y)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            found |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def importing(paths: list[Path], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        f"{path.relative_to(PACKAGE.parent)}: {name}"
        for path in paths
        for name in imports_of(path)
        if any(name == p or name.startswith(p + ".") for p in prefixes)
    )


def test_the_leg_field_table_imports_nothing_of_pbxcontrol():
    assert importing([PACKAGE / "legfields.py"], ("pbxcontrol",)) == []


def test_the_database_layer_imports_nothing_above_it():
    paths = sorted((PACKAGE / "db").rglob("*.py"))
    assert len(paths) > 5, "the scan found too few modules: is PACKAGE right?"
    assert importing(paths, ABOVE_THE_DATABASE) == []


# Each role's package and what it must not import (its __init__ docstring says what it may).
NOT_ABOVE = {
    "http": ("pbxcontrol.streams", "pbxcontrol.service", "pbxcontrol.recorder"),
    "auth": ("pbxcontrol.streams", "pbxcontrol.service", "pbxcontrol.recorder"),
    "streams": ("pbxcontrol.service", "pbxcontrol.recorder"),
    "service": ("pbxcontrol.recorder", "pbxcontrol.runtime"),
}


def test_each_role_imports_only_downward():
    for package, above in NOT_ABOVE.items():
        paths = sorted((PACKAGE / package).glob("*.py"))
        assert len(paths) > 3, f"the scan found too few modules in {package}/"
        assert importing(paths, above) == [], package


def test_the_recorder_parses_no_json():
    paths = sorted((PACKAGE / "recorder").glob("*.py"))
    assert importing(paths, ("json", "orjson")) == []


def test_the_check_finds_an_upward_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import json\nfrom pbxcontrol.recorder import fields\n")
    assert imports_of(bad) >= {"json", "pbxcontrol.recorder", "pbxcontrol.recorder.fields"}


def test_application_replaced_is_told_from_a_message_that_only_mentions_it():
    assert is_application_replaced('{"type": "ApplicationReplaced", "application": "pbx"}')
    varset = '{"type": "ChannelVarset", "variable": "X", "value": "ApplicationReplaced"}'
    assert not is_application_replaced(varset)
    assert not is_application_replaced('["ApplicationReplaced"]')
    assert not is_application_replaced("ApplicationReplaced, but not JSON")
    assert not is_application_replaced('{"type": "ChannelCreated"}')
