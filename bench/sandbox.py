"""The sandbox Asterisk and a `pbxcontrol serve` process, for the benchmarks that need them.

Every process started here is stopped by its pid; every channel originated is hung up by id.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests

from bench.asterisk import preflight  # noqa: F401 - bench.load imports it from here
from bench.common import ROOT

ARI = "http://127.0.0.1:8088/ari"
ARI_AUTH = ("pbxcontrol", "pbxcontrol-secret")
BENCH_CHANNEL = re.compile(r"^Local/\d+@bench-[0-9a-f]+;[12]$")


class Ari:
    def __init__(self) -> None:
        self.http = requests.Session()
        self.http.auth = ARI_AUTH
        self.originated: dict[str, int] = {}  # channel id -> its number, oldest first
        self.next_number = 100_000  # each call its own number (its legs' snumber)

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
                if self._originate(n):
                    return True
                time.sleep(0.2 * (attempt + 1))
            return False

        started = time.perf_counter()
        done = failed = 0
        with ThreadPoolExecutor(workers) as pool:
            while done < calls:
                size = min(batch, calls - done)
                numbers = range(self.next_number, self.next_number + size)
                self.next_number += size
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

    def _originate(self, n: int) -> bool:
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
        except requests.RequestException:
            return False
        if resp.ok:
            self.originated[resp.json()["id"]] = n
        return resp.ok

    def replace_oldest_call(self) -> tuple[int, int]:
        """One new Local call up, then the oldest one we originated hung up (its other half
        follows): as many legs as before, and the data changed. Returns (new number, old)."""
        n = self.next_number
        self.next_number += 1
        if not self._originate(n):
            raise RuntimeError(f"originating Local/{n}@bench failed")
        old_id, old = next(iter(self.originated.items()))
        resp = self.http.delete(f"{ARI}/channels/{old_id}", timeout=30)
        if resp.status_code not in (204, 404):
            raise RuntimeError(f"hanging up {old_id}: HTTP {resp.status_code}")
        del self.originated[old_id]
        return n, old

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

    def url(self, path: str, user: str, password: str, **params: str) -> str:
        query = ";".join(
            [f"auth_username={user}", f"auth_password={password}"]
            + [f"{k}={v}" for k, v in params.items()]
        )
        return f"{self.base}{path}/?{query}"

    def get(self, path: str, user: str, password: str, **params: str) -> requests.Response:
        return self.http.get(self.url(path, user, password, **params), timeout=60)

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

    def recorded(self, snumber: str | None = None) -> int:
        """Live legs in the service's database (all, or those of one source number), read
        from the file itself: a signal that the recorder has written a change which neither
        runs the API nor touches its caches."""
        where, args = ("WHERE snumber = ?", (snumber,)) if snumber is not None else ("", ())
        uri = f"file:{self.dir / 'pbx.db'}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=10)) as db:
            return db.execute(f"SELECT count(*) FROM legs {where}", args).fetchone()[0]

    def served_ms(self, function: str = "calls/active/list") -> list[float]:
        """Server-side times of the requests for `function` so far, from the access log
        (parameters, auth, the answer and its envelope: all but the HTTP transfer)."""
        mark = f" /api/json/{function}/ 200 "
        log = (self.dir / "serve.log").read_text(errors="replace").splitlines()
        return [float(line.rsplit(" ", 1)[1][:-2]) for line in log if mark in line]

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory now (VmRSS) or at its peak so far (VmHWM)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
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
