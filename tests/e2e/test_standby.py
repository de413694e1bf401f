"""Standby recorders against the real Asterisk (SPEC §10): two `pbxcontrol record` processes for
machine 1 and one `pbxcontrol api` on the harness's PostgreSQL, calls live. The holder is killed
(kill -9), hung (SIGSTOP, then woken while calls change) or cut off from the database: the
standby takes over within takeover_seconds and the list equals GET /channels.

Takeover time: from the fault to the standby's first successful reconcile (the `last_sync` it
writes in the same transaction, after taking the lease at a new epoch).
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, select
from sqlalchemy.pool import NullPool

from pbxcontrol.db.models import Machine
from sandbox.sippctl import ARI_URL
from tests.databases import password_url
from tests.e2e.conftest import APP
from tests.e2e.proxy import CuttableProxy
from tests.e2e.support import REPO, PbxServer, converge, hang_up_ours, of, wait_ari
from tests.e2e.test_faults import calls_before, calls_during, check_after

pytestmark = pytest.mark.e2e

TAKEOVER = 5.0  # [recorder] takeover_seconds (the default)
HOST = socket.gethostname()


class Recorder:
    """`pbxcontrol record` with its own config (and so possibly its own database URL)."""

    def __init__(self, workdir: Path, name: str, db_url: str):
        self.name = name
        workdir.mkdir(parents=True, exist_ok=True)
        self.config = workdir / f"{name}.ini"
        self.config.write_text(
            textwrap.dedent(f"""\
            [database]
            url = {db_url}
            [logging]
            level = DEBUG
            [recorder]
            takeover_seconds = {TAKEOVER:g}
            [asterisk:1]
            ari_url = {ARI_URL}
            username = pbxcontrol
            password = pbxcontrol-secret
            app = {APP}-standby
            ping_interval = 2
            ping_timeout = 4
            """)
        )
        self.config.chmod(0o600)
        self.log = workdir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def holder(self) -> str:
        assert self.proc is not None
        return f"{HOST}:{self.proc.pid}"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), "record"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_log(self, needle: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            assert self.proc is not None and self.proc.poll() is None, self.text()[-3000:]
            assert time.monotonic() < deadline, f"{self.name}: no {needle!r}:\n{self.text()}"
            time.sleep(0.05)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, sig)

    def stop(self) -> None:
        """At teardown: wake it if stopped, then SIGTERM (SIGKILL if it does not end)."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.kill(proc.pid, signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ApiServer(PbxServer):
    """`pbxcontrol api` (no recorder) on the same database, for the list."""

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), "api"],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=REPO,
            )
        deadline = time.monotonic() + timeout
        while self.list("admin", customer="system") is None:
            text = self.log.read_text(errors="replace")
            if "listening on http://" in text and not self.port:
                self.port = int(text.split("listening on http://")[1].split("/")[0].split(":")[1])
            assert self.proc.poll() is None, self.tail()
            assert time.monotonic() < deadline, self.tail()
            time.sleep(0.1)


@pytest.fixture
def site(asterisk, databases, tmp_path, request):
    """A provisioned PostgreSQL database, the API, and a factory of recorders."""
    started: list[Recorder] = []
    hang_up_ours(asterisk)
    with databases.fresh("postgresql", tmp_path, empty=True) as url:
        api = ApiServer(tmp_path / "api", ARI_URL, f"{APP}-standby", db_url=url)
        api.provision()
        api.start()
        engine = create_engine(url, poolclass=NullPool)

        def recorder(name: str, db_url: str = url) -> Recorder:
            rec = Recorder(tmp_path, name, db_url)
            started.append(rec)
            rec.start()
            return rec

        try:
            yield api, recorder, engine, url
        finally:
            for rec in started:
                rec.stop()
                if getattr(request.node, "e2e_failed", False):
                    print(f"--- {rec.name} ---\n{rec.text()[-4000:]}")
            api.stop()
            engine.dispose()


def lease(engine) -> Machine:
    """Machine 1's row (lease and status); an empty one before any recorder wrote it."""
    with engine.connect() as conn:
        row = conn.execute(select(Machine.__table__).where(Machine.id == 1)).first()
    return row or Machine(holder="", epoch=0, connected=False, last_sync=0.0)  # type: ignore[return-value]


def holding(engine, rec: Recorder, timeout: float = 20.0) -> int:
    """Wait until `rec` holds machine 1 and has reconciled; its epoch."""
    deadline = time.monotonic() + timeout
    while True:
        row = lease(engine)
        if row.holder == rec.holder and row.connected and row.last_sync:
            return row.epoch
        assert time.monotonic() < deadline, f"{rec.name} does not hold machine 1:\n{rec.text()}"
        time.sleep(0.05)


def takeover(engine, epoch: int, fault_at: float, by: Recorder) -> float:
    """Seconds from the fault (Unix time) to the new holder's first successful reconcile."""
    deadline = time.monotonic() + 4 * TAKEOVER
    while True:
        row = lease(engine)
        if row.epoch > epoch and row.last_sync >= fault_at:
            assert row.holder == by.holder
            return row.last_sync - fault_at
        assert time.monotonic() < deadline, f"no takeover:\n{by.text()[-3000:]}"
        time.sleep(0.02)


def active_and_standby(api, recorder, engine, ari, sipp, first_db: str | None = None):
    a = recorder("a", first_db) if first_db else recorder("a")
    epoch = holding(engine, a)
    b = recorder("b")
    b.wait_log(f"standby, holder {a.holder} (epoch {epoch})")
    calls_before(sipp, ari)
    converge(api, ari, 3)
    assert "events websocket connected" not in b.text()  # a standby stays off ARI
    return a, b, epoch


def report(fault: str, took: float) -> None:
    print(f"\nTAKEOVER {fault}: {took:.2f} s from the fault to the standby's first reconcile")


def test_kill_9_of_the_holder(site, asterisk, sipp):
    api, recorder, engine, _ = site
    ari = asterisk
    a, b, epoch = active_and_standby(api, recorder, engine, ari, sipp)
    fault_at = time.time()
    a.signal(signal.SIGKILL)
    calls_during(sipp, ari)
    took = takeover(engine, epoch, fault_at, b)
    report("kill -9", took)
    assert took <= TAKEOVER
    converge(api, ari, 2)
    check_after(api, ari)


def test_sigstop_then_sigcont_of_the_holder_writes_nothing(site, asterisk, sipp):
    api, recorder, engine, _ = site
    ari = asterisk
    a, b, epoch = active_and_standby(api, recorder, engine, ari, sipp)
    fault_at = time.time()
    a.signal(signal.SIGSTOP)
    calls_during(sipp, ari)
    took = takeover(engine, epoch, fault_at, b)
    report("SIGSTOP", took)
    assert took <= TAKEOVER
    converge(api, ari, 2)
    a.signal(signal.SIGCONT)  # the old holder wakes while calls change
    new = lease(engine)
    ari.hangup(of(ari.channels(), "PJSIP/carol")[0]["id"])
    sipp.phone_answers("bob", ring_ms=300)
    sipp.phone_calls("alice", "1002")
    wait_ari(ari, "a new call up", lambda ch: of(ch, "PJSIP/bob", "Up"))
    a.wait_log(f"lost the lease (epoch {epoch}) to {b.holder} (epoch {new.epoch})")
    a.wait_log("standing by: events websocket closed")
    converge(api, ari, 2)
    time.sleep(2 * TAKEOVER)  # whatever the old holder still had to write
    converge(api, ari, 0)
    row = lease(engine)
    assert (row.holder, row.epoch) == (b.holder, new.epoch)
    assert "another client took over" not in b.text()  # the new holder's websocket stayed
    assert b.text().count("events websocket connected") == 1
    after_wake = a.text().split(f"lost the lease (epoch {epoch})")[1]
    assert "events websocket connected" not in after_wake and "took the lease" not in after_wake


def test_the_holder_loses_the_database(site, asterisk, sipp):
    api, recorder, engine, url = site
    ari = asterisk
    pg = make_url(url)
    proxy = CuttableProxy((pg.host or "127.0.0.1", pg.port or 5432))
    try:
        cut_off = password_url(pg.set(host="127.0.0.1", port=proxy.port))
        a, b, epoch = active_and_standby(api, recorder, engine, ari, sipp, cut_off)
        fault_at = time.time()
        proxy.blocked.set()
        proxy.cut()
        calls_during(sipp, ari)
        took = takeover(engine, epoch, fault_at, b)
        report("database lost", took)
        assert took <= TAKEOVER
        converge(api, ari, 2)
        proxy.blocked.clear()  # the old holder reaches the database again
        a.wait_log(f"lost the lease (epoch {epoch})", timeout=15)
        a.wait_log("standing by: events websocket closed")
        check_after(api, ari)
        assert lease(engine).holder == b.holder
    finally:
        proxy.close()
