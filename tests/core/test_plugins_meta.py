"""Every installed plugin (entry-point group pbxcontrol.plugins) keeps the house rules: setup(ctx),
documentation, its own tests, and no imports of the core beyond pbxcontrol.plugin nor of
another plugin. The checks are tried on bad examples too, so they are known to bite."""

from __future__ import annotations

import ast
import importlib.util
from pathlib import Path

import pytest

from pbxcontrol import plugin

ROOT = Path(__file__).resolve().parents[2]
PUBLIC = "pbxcontrol.plugin"
PLUGINS = sorted(plugin.available())


def package_of(module) -> tuple[str, Path]:
    """The plugin's package name and folder (a single-module plugin is its own 'package')."""
    if hasattr(module, "__path__"):
        return module.__name__, Path(module.__file__).parent
    return module.__name__, Path(module.__file__)


def imported_names(source: str, module_name: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in `source`, relative ones resolved, and
    `from X import y` counted as X.y (y may be a module)."""
    package = module_name if is_package else module_name.rpartition(".")[0]
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) in _DYNAMIC
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            found.append((node.lineno, node.args[0].value))
    return found


_DYNAMIC = {"import_module", "__import__"}


def forbidden(name: str, own: str) -> bool:
    """May a plugin whose package is `own` import `name`?"""
    if name == own or name.startswith(own + "."):
        return False  # its own modules
    if name == PUBLIC or name.startswith(PUBLIC + "."):
        return False  # the public interface (and names imported from it)
    if name == "pbxcontrol" or name.startswith("pbxcontrol."):
        return True  # the core's internals, or another built-in plugin
    other_plugins = {
        package_of(plugin.load(n))[0] for n in PLUGINS if package_of(plugin.load(n))[0] != own
    }
    return any(name == p or name.startswith(p + ".") for p in other_plugins)


def violations(source: str, module_name: str, is_package: bool, own: str) -> list[str]:
    return [
        f"line {line}: imports {name}"
        for line, name in imported_names(source, module_name, is_package)
        if forbidden(name, own)
    ]


def modules_of(name: str):
    """(module name, is package, source) of every module of the plugin."""
    own, where = package_of(plugin.load(name))
    files = sorted(where.rglob("*.py")) if where.is_dir() else [where]
    for path in files:
        parts = path.relative_to(where).with_suffix("").parts if where.is_dir() else ()
        is_package = path.name == "__init__.py"
        if is_package:
            parts = parts[:-1]
        yield ".".join((own, *parts)), is_package, path.read_text()


def test_plugins_are_found_through_entry_points():
    assert "active_calls" in PLUGINS


@pytest.mark.parametrize("name", PLUGINS)
def test_plugin_has_setup_and_a_docstring(name):
    module = plugin.load(name)
    assert callable(module.setup)
    assert module.__doc__ and module.__doc__.strip(), f"{name} has no docstring"


@pytest.mark.parametrize("name", PLUGINS)
def test_plugin_is_documented_in_a_readme(name):
    """This project's README names it, or (a third-party plugin) it ships its own README."""
    _, where = package_of(plugin.load(name))
    own_readme = where.is_dir() and any(where.glob("README*"))
    assert own_readme or f"`{name}`" in (ROOT / "README.md").read_text(), (
        f"no README documents `{name}`"
    )


@pytest.mark.parametrize("name", PLUGINS)
def test_plugin_has_its_own_tests(name):
    """tests/plugins/NAME/ with test functions that drive or import the plugin."""
    folder = ROOT / "tests" / "plugins" / name
    tests = [
        node.name
        for path in folder.glob("test_*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
    ]
    assert len(tests) >= 5, f"tests/plugins/{name}/ holds {len(tests)} tests"


@pytest.mark.parametrize("name", PLUGINS)
def test_plugin_imports_only_the_public_interface(name):
    own = package_of(plugin.load(name))[0]
    bad = {
        module: found
        for module, is_package, source in modules_of(name)
        if (found := violations(source, module, is_package, own))
    }
    assert not bad


# The checks themselves, on a plugin module pbxcontrol.plugins.active_calls.query:
OWN = "pbxcontrol.plugins.active_calls"


@pytest.mark.parametrize(
    "source",
    [
        "import pbxcontrol.db.models",
        "import pbxcontrol",
        "from pbxcontrol import db",
        "from pbxcontrol.db.models import Leg",
        "from pbxcontrol.http import api",
        "from ...db import models",  # climbs out of the plugin into pbxcontrol
        "from .. import other_plugin",
        "from ..other_plugin import thing",
        "import pbxcontrol.plugins.other_plugin",
        "import importlib\nimportlib.import_module('pbxcontrol.db.models')",
    ],
)
def test_the_import_check_catches(source):
    assert violations(source, f"{OWN}.query", False, OWN)


@pytest.mark.parametrize(
    "source",
    [
        "from pbxcontrol.plugin import ApiError, legs",
        "import pbxcontrol.plugin",
        "from pbxcontrol import plugin",
        "from . import params",
        "from .names import NameBook",
        "import pbxcontrol.plugins.active_calls.names",
        "import sqlalchemy",
    ],
)
def test_the_import_check_allows(source):
    assert violations(source, f"{OWN}.query", False, OWN) == []
