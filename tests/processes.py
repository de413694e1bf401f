"""A `pbxcontrol` command running in the background, its stderr collected line by line."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import requests

LIST = "/api/json/calls/active/list/"
ADMIN = "auth_username=admin;auth_password=admin-pass"


class Service:
    """`pbxcontrol COMMAND` with its stderr collected line by line."""

    def __init__(self, config: Path, command: str = "api", cwd: Path | None = None) -> None:
        """`cwd`: where `python -m pbxcontrol` finds the package first (another release's)."""
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pbxcontrol", "--config", str(config), command],
            stderr=subprocess.PIPE,
            text=True,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base = ""

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)

    @property
    def log(self) -> str:
        return "".join(self.lines)

    def wait_for(self, pattern: str, timeout: float = 30.0, count: int = 1) -> re.Match[str]:
        deadline = time.monotonic() + timeout
        while True:
            found = list(re.finditer(pattern, self.log))
            if len(found) >= count:
                return found[count - 1]
            assert self.proc.poll() is None, f"exited with {self.proc.returncode}:\n{self.log}"
            assert time.monotonic() < deadline, f"no {pattern!r} in {timeout} s:\n{self.log}"
            time.sleep(0.05)

    def listening(self) -> str:
        found = self.wait_for(r"on (http://[\d.]+:\d+)/")
        self.base = found.group(1)
        return self.base

    def get(self, path: str) -> requests.Response:
        return requests.get(self.base + path, timeout=30)

    def code(self) -> str:
        """The envelope's code of calls/active/list as admin."""
        return self.get(f"{LIST}?{ADMIN}").json()["responses"][0]["code"]

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()
