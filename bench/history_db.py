"""The history bench's databases (two per engine: one that will hold the month, one alike
without it) and the clock of the server's CPU time."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, make_url, text
from sqlalchemy.pool import NullPool

from bench.common import ROOT
from pbxcontrol import runtime

SANDBOX = ROOT / "scripts" / "postgres-sandbox"


class ServerClock:
    """CPU time spent on requests, whatever else runs on the machine: this process's (the
    API, and SQLite in it) and, on PostgreSQL, its backends' (/proc/PID/schedstat: ns)."""

    def __init__(self, rt: runtime.Runtime):
        self.rt = rt
        self.backends: list[int] = []

    def find_backends(self) -> None:
        """After a warm-up: the server processes of the API's pooled connections."""
        if self.rt.engine.dialect.name != "postgresql":
            return
        with self.rt.engine.connect() as conn:
            found = conn.execute(
                text("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            )
            self.backends = list(found.scalars())

    def now(self) -> float:
        """Seconds of CPU so far."""
        spent = time.process_time()
        for pid in self.backends:
            with contextlib.suppress(OSError):  # a connection the pool closed since
                spent += int(Path(f"/proc/{pid}/schedstat").read_text().split()[0]) / 1e9
        return spent


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


@contextmanager
def databases(engine: str) -> Iterator[tuple[str, str]]:
    """Two new empty databases of `engine` (the runtime creates the schema)."""
    if engine == "sqlite":
        with tempfile.TemporaryDirectory(prefix="pbx-bench-history-db-") as tmp:
            yield f"sqlite:///{tmp}/plain.db", f"sqlite:///{tmp}/full.db"
        return
    with _postgres() as admin_url:
        names = [f"bench_history_{uuid.uuid4().hex[:8]}_{kind}" for kind in ("plain", "full")]
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        try:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f"CREATE DATABASE {name}"))
            urls = [make_url(admin_url).set(database=n) for n in names]
            plain, full = (u.render_as_string(hide_password=False) for u in urls)
            yield plain, full
        finally:
            with admin.connect() as conn:
                for name in names:
                    conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            admin.dispose()


@contextmanager
def _postgres() -> Iterator[str]:
    """The PostgreSQL sandbox's URL; started if needed, and then stopped again at the end
    unless other databases (a test session's) are on it."""

    def sandbox(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(SANDBOX), *args], capture_output=True, text=True)

    started = False
    if sandbox("status").returncode != 0:
        up = sandbox("up")
        assert up.returncode == 0, f"scripts/postgres-sandbox up failed: {up.stderr}"
        started = True
    url = sandbox("url").stdout.strip()
    try:
        yield url
    finally:
        if started:
            admin = create_engine(url, poolclass=NullPool)
            with admin.connect() as conn:
                others = conn.execute(
                    text("SELECT count(*) FROM pg_database WHERE datname ~ '^(t|tpl)_'")
                ).scalar()
            admin.dispose()
            if not others:
                sandbox("down")
