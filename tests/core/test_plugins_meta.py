"""Every built-in plugin keeps the house rules: setup(ctx), a docstring, tests, README docs,
and no imports of core internals beyond pbxcontrol.plugin."""

import ast
from pathlib import Path

import pytest

from pbxcontrol import plugin

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_CORE = {"pbxcontrol.plugin"}


@pytest.mark.parametrize("name", sorted(plugin.available()))
def test_plugin_is_documented_tested_and_uses_only_the_public_interface(name):
    module = plugin.load(name)
    assert module.__doc__, f"{name} has no docstring"
    assert (ROOT / "tests" / "plugin").is_dir()
    assert f"`{name}`" in (ROOT / "README.md").read_text()
    for path in (ROOT / "plugins" / name).glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                if node.module.startswith("pbxcontrol"):
                    assert node.module in ALLOWED_CORE, f"{path.name} imports {node.module}"
                assert not node.module.startswith("pbxcontrol.plugins"), "plugins import each other"
