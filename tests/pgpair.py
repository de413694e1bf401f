"""A PostgreSQL primary and its streaming standby, for failover tests (SPEC §12).

Two clusters of their own on free ports of 127.0.0.1, made by the test and thrown away after
it: the primary by `initdb`, the standby by `pg_basebackup -R` from it (it streams the
primary's WAL and answers read-only). Debian's `postgresql` server binaries run as the
`postgres` user, as scripts/postgres-sandbox runs them (this needs root, like the sandbox);
the clusters live in a directory of their own under $TMPDIR that user may enter.

The primary dies in one of the two ways a test asks for: `stop_at_once()` (pg_ctl stop -m
immediate: its connections are reset) or `freeze()` (SIGSTOP to the postmaster and every
server process: connections stay open and nothing answers, as when a host or its network
dies); then `promote()` makes the standby the primary.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

ROLE, PASSWORD, DATABASE = "pbxfail", "pbxfail-secret", "pbx"
OS_USER = "postgres"


def server_bin() -> Path:
    """The newest installed PostgreSQL server binaries (Debian: /usr/lib/postgresql/N/bin)."""
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/postgres"), key=lambda p: int(p.parts[-3])
    )
    if not found or os.geteuid() != 0:
        raise RuntimeError(
            "the failover tests run a PostgreSQL primary and standby of their own: they need "
            "Debian's `postgresql` package (scripts/postgres-sandbox up installs it) and root "
            "(to run the servers as the postgres user)"
        )
    return found[-1].parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """One PostgreSQL server: its data directory, port and postmaster."""

    def __init__(self, bin_dir: Path, root: Path, name: str) -> None:
        self.bin = bin_dir
        self.root = root
        self.data = root / name
        self.port = free_port()
        self.log = root / f"{name}.log"
        self.pid = 0  # the postmaster
        #: `runuser`, leader of a session and process group of its own: it waits for the
        #: postmaster and stops itself when the postmaster is stopped (SIGSTOP), so teardown
        #: continues and kills the whole group, or a stopped `runuser` would stay behind.
        self.proc: subprocess.Popen[bytes] | None = None

    def run(self, *args: str, timeout: float = 120) -> str:
        """A server program as the postgres user; its output (it must succeed)."""
        done = subprocess.run(
            ["runuser", "-u", OS_USER, "--", str(self.bin / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def start(self) -> None:
        if self.proc is not None:  # stopped before (its runuser exits with it): reaped
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=10)
        self.proc = subprocess.Popen(
            ["runuser", "-u", OS_USER, "--", str(self.bin / "postgres")]
            + ["-D", str(self.data), "-c", "listen_addresses=127.0.0.1"]
            + ["-c", f"port={self.port}", "-c", f"unix_socket_directories={self.root}"]
            + ["-c", "fsync=off", "-c", "full_page_writes=off", "-c", "autovacuum=off"]
            + ["-c", "max_connections=100", "-c", "wal_level=replica", "-c", "hot_standby=on"],
            stdin=subprocess.DEVNULL,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not self._ready():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.data.name} did not start:\n{self.log.read_text()}")
            time.sleep(0.1)
        self.pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def _ready(self) -> bool:
        return (
            subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", str(self.root), "-p", str(self.port)],
                stdin=subprocess.DEVNULL,
            ).returncode
            == 0
        )

    def sql(self, statement: str, dbname: str = "postgres") -> list[tuple]:
        """As the superuser, over the unix socket (autocommit)."""
        with psycopg.connect(
            host=str(self.root), port=self.port, user=OS_USER, dbname=dbname, autocommit=True
        ) as conn:
            cur = conn.execute(statement)
            return cur.fetchall() if cur.description else []

    def processes(self, top: int | None = None) -> list[int]:
        """The postmaster (or `top`) and every process under it (server processes call
        setsid: they are in groups of their own, so a group's signal does not reach them)."""
        found, todo = [], [top or self.pid]
        while todo:
            pid = todo.pop()
            found.append(pid)
            with contextlib.suppress(OSError):
                todo += [
                    int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                ]
        return found

    def signal(self, sig: int, top: int | None = None) -> None:
        for pid in self.processes(top):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def stop(self) -> None:
        """Nothing of this server left: everything continued (a frozen server and the
        `runuser` that stopped with it), stopped at once, then killed, group and tree."""
        if self.proc is None:
            return
        leader = self.proc.pid
        self.signal(signal.SIGCONT, leader)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGCONT)
        if self.pid:
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self.run("pg_ctl", "stop", "-D", str(self.data), "-m", "immediate", timeout=30)
        remaining = self.processes(leader) if self.proc.poll() is None else []
        with contextlib.suppress(ProcessLookupError):
            os.killpg(leader, signal.SIGKILL)
        for pid in remaining:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=10)
        self.proc, self.pid = None, 0


class Pair:
    """A primary and its streaming standby."""

    def __init__(self) -> None:
        bin_dir = server_bin()
        self.root = Path(tempfile.mkdtemp(prefix="pbxcontrol-pair-"))
        shutil.chown(self.root, OS_USER)
        self.root.chmod(0o700)
        self.primary = Cluster(bin_dir, self.root, "primary")
        self.standby = Cluster(bin_dir, self.root, "standby")

    @property
    def url(self) -> str:
        """libpq's multi-host form: the first of the hosts that takes writes."""
        hosts = "&".join(f"host=127.0.0.1:{c.port}" for c in (self.primary, self.standby))
        return (
            f"postgresql+psycopg://{ROLE}:{PASSWORD}@/{DATABASE}?{hosts}"
            "&target_session_attrs=read-write"
        )

    def start(self) -> Pair:
        p = self.primary
        p.run("initdb", "-D", str(p.data), "-U", OS_USER, "--auth-local=trust", "-E", "UTF8",
              "--auth-host=scram-sha-256", "--locale=C.UTF-8", "--no-sync")  # fmt: skip
        p.start()
        p.sql(f"CREATE ROLE {ROLE} LOGIN PASSWORD '{PASSWORD}'")
        p.sql(f"CREATE DATABASE {DATABASE} OWNER {ROLE}")
        s = self.standby
        # -c fast: the backup starts with an immediate checkpoint; the default spreads it over
        # checkpoint_completion_target x checkpoint_timeout (minutes, for a few dirty pages).
        p.run("pg_basebackup", "-h", str(self.root), "-p", str(p.port), "-U", OS_USER,
              "-D", str(s.data), "-R", "-X", "stream", "-c", "fast", "--no-sync")  # fmt: skip
        s.start()
        self.wait_streaming()
        return self

    def wait_streaming(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while not self.primary.sql("SELECT 1 FROM pg_stat_replication WHERE state = 'streaming'"):
            if time.monotonic() > deadline:
                raise RuntimeError("the standby does not stream:\n" + self.standby.log.read_text())
            time.sleep(0.1)

    def caught_up(self, timeout: float = 30) -> None:
        """Wait until the standby has replayed everything the primary has written."""
        target = self.primary.sql("SELECT pg_current_wal_lsn()")[0][0]
        deadline = time.monotonic() + timeout
        while not self.standby.sql(f"SELECT pg_last_wal_replay_lsn() >= '{target}'")[0][0]:
            if time.monotonic() > deadline:
                raise RuntimeError("the standby does not catch up")
            time.sleep(0.05)

    def stop_at_once(self) -> None:
        """The primary dies: `pg_ctl stop -m immediate` (its connections are reset)."""
        self.primary.run("pg_ctl", "stop", "-D", str(self.primary.data), "-m", "immediate")
        self.primary.pid = 0  # its runuser exits and is reaped at close()

    def freeze(self) -> None:
        """The primary freezes: SIGSTOP to every server process (sockets stay open)."""
        self.primary.signal(signal.SIGSTOP)

    def promote(self) -> None:
        self.standby.run("pg_ctl", "promote", "-D", str(self.standby.data), "-w")

    def close(self) -> None:
        for cluster in (self.primary, self.standby):
            cluster.stop()
        shutil.rmtree(self.root, ignore_errors=True)
