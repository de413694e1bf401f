"""The sandbox Asterisk and a `pbxcontrol serve` process, for the benchmarks that need them.

Every process started here is stopped by its pid; every channel originated is hung up by id.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.common import ROOT

ARI = "http://127.0.0.1:8088/ari"
ARI_AUTH = ("pbxcontrol", "pbxcontrol-secret")
SANDBOX = ROOT / "scripts" / "asterisk-sandbox"
BENCH_CHANNEL = re.compile(r"^Local/\d+@bench-[0-9a-f]+;[12]$")


class SandboxBusy(RuntimeError):
    """Someone else (the e2e tests) is using the sandbox Asterisk."""


def e2e_running() -> list[str]:
    """pytest processes that may drive the sandbox: any but those deselecting e2e."""
    out = subprocess.run(["pgrep", "-af", "pytest"], capture_output=True, text=True).stdout
    return [
        line
        for line in out.splitlines()
        if "e2e" in line and "not e2e" not in line and "pgrep" not in line
    ]


def preflight(wait_s: float = 600.0) -> None:
    """Wait (polling) while e2e tests run, then make sure Asterisk and [bench] are there."""
    deadline = time.monotonic() + wait_s
    while busy := e2e_running():
        if time.monotonic() > deadline:
            raise SandboxBusy("e2e tests still running: " + "; ".join(busy))
        print(f"  waiting: e2e tests are using the sandbox ({busy[0][:60]})", flush=True)
        time.sleep(20)
    status = subprocess.run([SANDBOX, "status"], capture_output=True, text=True)
    if status.returncode != 0 or "running" not in status.stdout:
        raise RuntimeError("the sandbox Asterisk is not running: scripts/asterisk-sandbox up")
    dialplan = cli("dialplan show bench")
    if "_X." not in dialplan:
        subprocess.run([SANDBOX, "reload"], check=True, capture_output=True)
        if "_X." not in cli("dialplan show bench"):
            raise RuntimeError("context [bench] missing from the sandbox dialplan")


def cli(command: str) -> str:
    return subprocess.run([SANDBOX, "cli", command], capture_output=True, text=True).stdout


class Ari:
    def __init__(self) -> None:
        self.http = requests.Session()
        self.http.auth = ARI_AUTH
        self.originated: list[str] = []

    def channels(self) -> list[dict]:
        resp = self.http.get(f"{ARI}/channels", timeout=30)
        resp.raise_for_status()
        return resp.json()

    def originate_local(
        self, calls: int, workers: int = 4, batch: int = 250, retries: int = 3
    ) -> tuple[int, float, int]:
        """Up to `calls` Local/<n>@bench calls (two legs each), in batches; each POST is retried
        on errors. Stops early when a whole batch fails. Returns (calls originated, seconds,
        failed POSTs after retries)."""

        def one(n: int) -> bool:
            for attempt in range(retries + 1):
                try:
                    resp = self.http.post(
                        f"{ARI}/channels",
                        timeout=30,
                        params={
                            "endpoint": f"Local/{n}@bench",
                            "context": "bench",
                            "extension": str(n),
                            "priority": "1",
                            "callerId": f"Bench <{n}>",
                        },
                    )
                    if resp.ok:
                        self.originated.append(resp.json()["id"])
                        return True
                except requests.RequestException:
                    pass
                time.sleep(0.2 * (attempt + 1))
            return False

        started = time.perf_counter()
        done = failed = 0
        first = 100_000
        with ThreadPoolExecutor(workers) as pool:
            while done < calls:
                size = min(batch, calls - done)
                numbers = range(first + done + failed, first + done + failed + size)
                ok = sum(pool.map(one, numbers))
                done += ok
                failed += size - ok
                if ok == 0:
                    print(
                        f"  a whole batch of {size} originates failed; stopping at {done} calls",
                        flush=True,
                    )
                    break
        return done, time.perf_counter() - started, failed

    def hangup_bench_channels(self, timeout: float = 120.0) -> int:
        """DELETE every channel we originated and any [bench] Local leg left, then wait until
        GET /ari/channels is empty (others' channels are never touched). Returns how many
        channels are still up at the timeout."""

        def delete(channel_id: str) -> None:
            with contextlib.suppress(requests.RequestException):
                self.http.delete(f"{ARI}/channels/{channel_id}", timeout=30)

        ids = set(self.originated)
        deadline = time.monotonic() + timeout
        while True:
            try:
                channels = self.channels()
                left = [c["id"] for c in channels if BENCH_CHANNEL.match(c["name"])]
            except (requests.RequestException, ValueError):
                channels, left = [None], list(ids)
            todo = ids | set(left)
            if not channels or time.monotonic() > deadline:
                self.originated.clear()
                return len(channels)
            if todo:
                with ThreadPoolExecutor(8) as pool:
                    list(pool.map(delete, todo))
            ids = set()
            time.sleep(1.0)


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Service:
    """`pbxcontrol serve` on a fresh SQLite file, provisioned with sandbox/provision.json."""

    def __init__(
        self,
        app: str = "pbxcontrol-bench",
        threads: int = 8,
        processes: int | None = None,
        extra: str = "",
    ):
        self.dir = Path(tempfile.mkdtemp(prefix="pbx-bench-serve-"))
        self.port = free_port()
        self.config = self.dir / "pbxcontrol.ini"
        self.config.write_text(
            f"[database]\nurl = sqlite:///{self.dir / 'pbx.db'}\n"
            f"[http]\nhost = 127.0.0.1\nport = {self.port}\nthreads = {threads}\n"
            + (f"processes = {processes}\n" if processes else "")
            + "[logging]\nlevel = INFO\n[plugins]\nenabled = active_calls\n"
            f"[asterisk:1]\nari_url = {ARI}\nusername = {ARI_AUTH[0]}\n"
            f"password = {ARI_AUTH[1]}\napp = {app}\nsubscribe_all = yes\n" + extra
        )
        self.config.chmod(0o600)
        self.base = f"http://127.0.0.1:{self.port}/api/json/"
        self.proc: subprocess.Popen | None = None
        self.http = requests.Session()

    def _cmd(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), *args]

    def start(self) -> None:
        subprocess.run(
            self._cmd("provision", str(ROOT / "sandbox" / "provision.json")),
            check=True,
            capture_output=True,
            cwd=ROOT,
        )
        self.log = open(self.dir / "serve.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            self._cmd("serve"), stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL, cwd=ROOT
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                self.http.get(self.base + "bench/ping/", timeout=2)
                return
            except requests.RequestException:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.2)
        raise RuntimeError(f"pbxcontrol serve did not start; see {self.dir / 'serve.log'}")

    def get(self, path: str, user: str, password: str, **params: str) -> requests.Response:
        query = ";".join(
            [f"auth_username={user}", f"auth_password={password}"]
            + [f"{k}={v}" for k, v in params.items()]
        )
        return self.http.get(f"{self.base}{path}/?{query}", timeout=60)

    def count(self, user: str = "admin", password: str = "admin-pass") -> int:
        body = self.get("calls/active/list", user, password, customer="system", count="1")
        return int(body.json()["data"]["count"])

    def wait_count(self, wanted: int, timeout: float) -> float:
        """Seconds until the system view counts `wanted` legs; raises after timeout."""
        started = time.monotonic()
        while (n := self.count()) != wanted:
            if time.monotonic() - started > timeout:
                raise RuntimeError(f"API shows {n} legs, expected {wanted}")
            time.sleep(0.2)
        return time.monotonic() - started

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS")

    def children(self) -> list[int]:
        if self.proc is None:
            return []
        pids: list[int] = []
        with contextlib.suppress(OSError):
            for task in Path(f"/proc/{self.proc.pid}/task").iterdir():
                pids += [int(x) for x in (task / "children").read_text().split()]
        return pids

    def stop(self) -> None:
        children = self.children()
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        for pid in children:  # API worker processes ([http] processes > 1), by pid
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM)
        if self.proc is not None:
            self.log.close()
