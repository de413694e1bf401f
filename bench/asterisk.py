"""The sandbox Asterisk for the benchmarks: brought up when a part needs it and it is not
running, and then taken down at the end of the run (`release`); one that was already running
is left running. While e2e tests use it, the parts wait.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from bench.common import ROOT

SANDBOX = ROOT / "scripts" / "asterisk-sandbox"

#: Whether this process ran `scripts/asterisk-sandbox up` (then `release` runs `down`).
_started = False


class SandboxBusy(RuntimeError):
    """Someone else (the e2e tests) is using the sandbox Asterisk."""


def e2e_running() -> list[str]:
    """pytest processes that may drive the sandbox: any but those deselecting e2e (and not a
    lock wrapper such as `flock LOCK pytest ...` still waiting: its pytest shows up itself
    once it runs)."""
    out = subprocess.run(["pgrep", "-af", "pytest"], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        if "e2e" in line
        and "not e2e" not in line
        and "pgrep" not in line
        and not _wrapper(line.split(maxsplit=2)[1:2])
    ]


def _wrapper(program: list[str]) -> bool:
    return bool(program) and program[0].rsplit("/", 1)[-1] in ("flock", "timeout", "nohup")


def preflight(wait_s: float = 600.0) -> None:
    """Wait (polling) while e2e tests run, then make sure Asterisk and [bench] are there."""
    deadline = time.monotonic() + wait_s
    while busy := e2e_running():
        if time.monotonic() > deadline:
            raise SandboxBusy("e2e tests still running: " + "; ".join(busy))
        print(f"  waiting: e2e tests are using the sandbox ({busy[0][:60]})", flush=True)
        time.sleep(20)
    if not running():
        start()
    dialplan = cli("dialplan show bench")
    if "_X." not in dialplan:
        subprocess.run([SANDBOX, "reload"], check=True, capture_output=True)
        if "_X." not in cli("dialplan show bench"):
            raise RuntimeError("context [bench] missing from the sandbox dialplan")


def running() -> bool:
    status = subprocess.run([SANDBOX, "status"], capture_output=True, text=True)
    return status.returncode == 0 and "running" in status.stdout


def start() -> None:
    """`scripts/asterisk-sandbox up` (it builds the chroot the first time: minutes)."""
    global _started
    print("  starting the sandbox Asterisk (scripts/asterisk-sandbox up)", flush=True)
    up = subprocess.run([SANDBOX, "up"], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if up.returncode != 0:
        raise RuntimeError(f"scripts/asterisk-sandbox up failed: {up.stderr.strip()[-500:]}")
    _started = True


def release() -> None:
    """At the end of the run: stop the sandbox if this run started it (by the script's
    `down`, which stops its own pid); one that was running before is left running."""
    global _started
    if _started and not e2e_running():  # an e2e run that came since would lose it
        print("  stopping the sandbox Asterisk this run started", flush=True)
        subprocess.run([SANDBOX, "down"], capture_output=True, stdin=subprocess.DEVNULL)
        _started = False


def cli(command: str) -> str:
    return subprocess.run([SANDBOX, "cli", command], capture_output=True, text=True).stdout


def asterisk_fd_budget(margin: int = 600) -> tuple[int, int]:
    """(file descriptors the sandbox Asterisk may still open, its limit): each channel holds
    two (alert pipe and timer), so 10,000 channels need more than 20,000."""
    out = subprocess.run([SANDBOX, "root"], capture_output=True, text=True).stdout.strip()
    pid = int((Path(out).parent / "asterisk.pid").read_text().split()[0])
    limit = 0
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            limit = int(line.split()[3])
    used = len(os.listdir(f"/proc/{pid}/fd"))
    return max(0, limit - used - margin), limit
