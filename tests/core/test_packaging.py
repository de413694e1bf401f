"""The installed product: plugins ship as pbxcontrol.plugins, never as a top-level package."""

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contains_core_plugins_and_migrations(tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    wheel = next(tmp_path.glob("pbxcontrol-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "pbxcontrol/plugins/active_calls/__init__.py" in names
    assert "pbxcontrol/db/migrations/env.py" in names
    assert any(n.startswith("pbxcontrol/db/migrations/versions/0001") for n in names)
    assert not [n for n in names if n.startswith("plugins/")]
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "pbxcontrol = pbxcontrol.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
