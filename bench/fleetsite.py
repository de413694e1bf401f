"""The processes of bench/fleet.py: a PostgreSQL of its own (scripts/postgres-sandbox on
another port and cache, so that stopping it for the recovery scenario disturbs nobody else's
tests), the stand-in Asterisk machines (bench/fleetari.py), a `pbxcontrol record` per machine
and a standby for some, two `pbxcontrol api`. Everything is stopped by its pid.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

from bench.common import ROOT
from bench.sandbox import free_port

SCRIPT = ROOT / "scripts" / "postgres-sandbox"
MAX_CONNECTIONS = 900  # 50 recorders, their standbys and two APIs, with their pools
AUTH = ("pbxcontrol", "fleet-secret")
REOPENED = re.compile(
    r"closing the events websocket|events connection lost|took over our ARI application"
)


class Postgres:
    """scripts/postgres-sandbox's server, on a port and in a cache of this run's own."""

    def __init__(self, workdir: Path) -> None:
        self.env = dict(
            os.environ,
            PBXCONTROL_CACHE=str(workdir / "cache"),
            POSTGRES_SANDBOX_PORT=str(free_port()),
        )
        self.url = ""
        self.command: list[str] = []
        self.data = ""

    def _script(self, *args: str) -> str:
        done = subprocess.run(
            [str(SCRIPT), *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        if done.returncode:
            raise RuntimeError(f"postgres-sandbox {args[0]}: {done.stderr.strip()}")
        return done.stdout.strip()

    def up(self) -> None:
        self.url = self._script("up").splitlines()[-1]
        pid = self.pid()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[:-1]
        self.command = [
            a.decode().replace("max_connections=300", f"max_connections={MAX_CONNECTIONS}")
            for a in cmdline
        ]
        self.data = self.command[self.command.index("-D") + 1]
        self.stop()
        self.start()

    def pid(self) -> int:
        return int((Path(self.env["PBXCONTROL_CACHE"]) / "pg" / "postgres.pid").read_text())

    def stop(self) -> None:
        """A fast shutdown (every session ended), as when the database host goes down."""
        pid = self.pid()
        os.kill(pid, signal.SIGINT)
        while Path(f"/proc/{pid}").exists():
            time.sleep(0.05)

    def start(self) -> float:
        """Start the server again; the time.time() it answers."""
        log = Path(self.env["PBXCONTROL_CACHE"]) / "pg" / "postgres.log"
        with open(log, "ab") as out:
            subprocess.Popen(
                ["setsid", "runuser", "-u", "postgres", "--", *self.command],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out,
            )  # fmt: skip
        pidfile = Path(self.data) / "postmaster.pid"
        engine = create_engine(self.url, poolclass=NullPool)
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(text("SELECT 1"))
                    break
                except Exception:  # noqa: BLE001 - not up yet
                    time.sleep(0.05)
        finally:
            engine.dispose()
        (Path(self.env["PBXCONTROL_CACHE"]) / "pg" / "postgres.pid").write_text(
            pidfile.read_text().splitlines()[0] + "\n"
        )
        return time.time()

    def database(self, name: str) -> str:
        admin = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
        return self.url.rsplit("/", 1)[0] + "/" + name

    def down(self) -> None:
        self._script("down")

    def cpu_seconds(self) -> float:
        """The server's CPU so far: the postmaster with its reaped children, and the live ones."""
        pid = self.pid()
        total = _cpu(pid, children=True)
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _cpu(int(child))
        return total


def _cpu(pid: int, children: bool = False) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / os.sysconf("SC_CLK_TCK")


def rss_mb(pid: int) -> float:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    match = re.search(r"VmRSS:\s+(\d+)", status)
    return int(match.group(1)) / 1024 if match else 0.0


class StandIns:
    """bench/fleetari.py processes, up to PER_PROCESS machines each; their stdout read by a
    thread that keeps who connected and listed."""

    PER_PROCESS = 10

    def __init__(self, machines: int, copies: int, keep: int) -> None:
        self.procs: list[subprocess.Popen] = []
        self.ports: dict[int, int] = {}
        self.burst_events: dict[int, list[int]] = {}  # (setup, teardown) events
        self.connected: dict[int, int] = {}
        self.listed: dict[int, float] = {}
        self.lines: dict[str, list[str]] = {}
        self.cond = threading.Condition()
        numbers = list(range(1, machines + 1))
        for i in range(0, machines, self.PER_PROCESS):
            group = ",".join(map(str, numbers[i : i + self.PER_PROCESS]))
            proc = subprocess.Popen(
                [sys.executable, "-m", "bench.fleetari", "--machines", group,
                 "--copies", str(copies), "--keep", str(keep)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
            )  # fmt: skip
            self.procs.append(proc)
        for proc in self.procs:
            assert proc.stdout is not None
            ready = json.loads(proc.stdout.readline().split(" ", 1)[1])
            self.ports.update({int(k): v for k, v in ready["ports"].items()})
            self.burst_events.update({int(k): v for k, v in ready["burst"].items()})
            threading.Thread(target=self._read, args=(proc,), daemon=True).start()

    def url(self, machine: int) -> str:
        return f"http://127.0.0.1:{self.ports[machine]}/ari"

    def _read(self, proc: subprocess.Popen) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            word, _, rest = line.strip().partition(" ")
            with self.cond:
                if word == "connected":
                    self.connected[int(rest)] = self.connected.get(int(rest), 0) + 1
                elif word == "listed":
                    self.listed[int(rest)] = time.time()
                else:
                    self.lines.setdefault(word, []).append(rest)
                self.cond.notify_all()

    def tell(
        self, command: str, answer: str | None = None, timeout: float = 600, first: bool = False
    ) -> list[str]:
        """Send a command to every process (`first`: to the first one only); with `answer`,
        wait for that line from each."""
        procs = self.procs[:1] if first else self.procs
        with self.cond:
            if answer:
                self.lines[answer] = []
            for proc in procs:
                assert proc.stdin is not None
                proc.stdin.write(command + "\n")
                proc.stdin.flush()
            if not answer:
                return []
            if not self.cond.wait_for(
                lambda: len(self.lines[answer]) == len(procs), timeout=timeout
            ):
                raise RuntimeError(f"stand-ins: no {answer} within {timeout} s")
            return list(self.lines[answer])

    def channels(self) -> dict[tuple[int, str], dict]:
        """The union of every machine's GET /channels, by (machine, uniqueid)."""
        import requests

        union = {}
        with requests.Session() as http:
            for machine in self.ports:
                for channel in http.get(self.url(machine) + "/channels", timeout=30).json():
                    union[(machine, channel["id"])] = channel
        return union

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            proc.wait(10)


class Pbx:
    """A `pbxcontrol record` or `api` process on the fleet's database."""

    def __init__(self, workdir: Path, name: str, command: str, config: str) -> None:
        self.dir = workdir / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.name, self.command = name, command
        self.config = self.dir / "pbxcontrol.ini"
        self.config.write_text(config)
        self.config.chmod(0o600)
        self.log = self.dir / f"{command}.log"
        self.proc: subprocess.Popen | None = None
        self.port = 0

    def cli(self, *args: str) -> None:
        subprocess.run(
            [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), *args],
            check=True, capture_output=True, cwd=ROOT, timeout=300,
        )  # fmt: skip

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), self.command],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, cwd=ROOT,
            )  # fmt: skip

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except OSError:
            return ""

    def wait_for(self, pattern: str, timeout: float) -> re.Match:
        deadline = time.monotonic() + timeout
        while True:
            match = re.search(pattern, self.text())
            if match:
                return match
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n{self.text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name}: no {pattern!r} in {timeout} s")
            time.sleep(0.2)

    def reopens(self) -> int:
        return len(REOPENED.findall(self.text()))

    def terminate(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def config(url: str, machines: dict[int, str], level: str = "INFO") -> str:
    """INI text: the database, an HTTP port of the system's choosing, the machines."""
    head = (
        f"[database]\nurl = {url}\n[http]\nhost = 127.0.0.1\nport = 0\nthreads = 8\n"
        f"streams_per_person = 100000\n[logging]\nlevel = {level}\n"
        "[plugins]\nenabled = active_calls\n"
    )
    return head + "".join(
        f"[asterisk:{m}]\nari_url = {ari}\nusername = {AUTH[0]}\npassword = {AUTH[1]}\n"
        f"app = fleet-{m}\nsubscribe_all = yes\n"
        for m, ari in machines.items()
    )
