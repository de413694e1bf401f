"""The installed product: plugins ship as pbxcontrol.plugins (never a top-level package) and are
announced as entry points; the version is written once, in setup.cfg."""

from __future__ import annotations

import configparser
import json
import shutil
import subprocess
import sys
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

import pbxcontrol
from pbxcontrol import plugin

ROOT = Path(__file__).resolve().parents[2]


def setup_cfg() -> configparser.ConfigParser:
    parser = configparser.ConfigParser()
    parser.read(ROOT / "setup.cfg")
    return parser


def test_the_version_is_written_once_and_everything_reads_it():
    written = setup_cfg()["metadata"]["version"]
    # A stale install (setup.cfg changed, `pip install -e .` not re-run) fails here too.
    assert version("pbxcontrol") == written
    assert pbxcontrol.__version__ == written
    openapi = json.loads((ROOT / "docs" / "openapi.json").read_text())
    assert openapi["info"]["version"] == written, "docs/openapi.json info.version"


def test_the_command_reports_the_version():
    done = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--version"], capture_output=True, text=True
    )
    assert done.stdout.strip() == f"pbxcontrol {setup_cfg()['metadata']['version']}"


def test_built_in_plugins_are_entry_points_of_their_own_group():
    announced = setup_cfg()["options.entry_points"]["pbxcontrol.plugins"]
    assert "active_calls = pbxcontrol.plugins.active_calls" in announced
    assert plugin.load("active_calls").__name__ == "pbxcontrol.plugins.active_calls"


def test_an_unknown_plugin_is_a_clear_error():
    with pytest.raises(plugin.PluginError, match=r"unknown plugin 'nope' \(installed: .*active"):
        plugin.load("nope")


@pytest.mark.slow
def test_wheel_contains_core_plugins_migrations_and_metadata(tmp_path):
    # Built from a copy: building in place would leave an egg-info in the checkout, whose
    # stale entry points would shadow the installed ones for anything run from there.
    source = tmp_path / "src"
    shutil.copytree(
        ROOT,
        source,
        ignore=shutil.ignore_patterns(".*", "build", "dist", "*.egg-info", "__pycache__", "var"),
    )
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(tmp_path), str(source)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = zipfile.ZipFile(next(tmp_path.glob("pbxcontrol-*.whl")))
    names = wheel.namelist()
    assert "pbxcontrol/plugins/active_calls/__init__.py" in names
    assert "pbxcontrol/db/migrations/env.py" in names
    assert "pbxcontrol/db/migrations/script.py.mako" in names
    assert "pbxcontrol/py.typed" in names
    assert any(n.startswith("pbxcontrol/db/migrations/versions/0001") for n in names)
    assert not [n for n in names if n.startswith("plugins/")]
    info = {Path(n).name: n for n in names if ".dist-info/" in n}
    assert "LICENSE" in info and "MIT License" in wheel.read(info["LICENSE"]).decode()
    entry_points = wheel.read(info["entry_points.txt"]).decode()
    assert "pbxcontrol = pbxcontrol.cli:main" in entry_points
    assert "[pbxcontrol.plugins]\nactive_calls = pbxcontrol.plugins.active_calls" in entry_points
    metadata = wheel.read(info["METADATA"]).decode()
    for python in ("3 :: Only", "3.11", "3.12", "3.13"):
        assert f"Classifier: Programming Language :: Python :: {python}\n" in metadata
