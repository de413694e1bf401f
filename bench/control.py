"""Call control through the recording process (SPEC §11.2) against the sandbox Asterisk:
request → answer and request → effect, p50/p99, of calls/hangup and of every other control
function (bench/control_more.py: calls/redirect, calls/make, recording/recordings/start and
stop, calls/monitor), on SQLite (`serve`: API and recorder in one process, woken in-process)
and on PostgreSQL (`api` and `record` as two processes, the API's NOTIFY wakes the holder),
each against the direct path of the same run.

The direct path is what calls/hangup did before intents: the API process called ARI's
`DELETE /channels/{id}` itself, inside the request. Its cost is measured as its two parts in
the same rounds: `DELETE /channels/{id}` from this process (request → answer, → effect), plus
the API's own work for a hangup request without the ARI call (a calls/hangup that finds no leg:
authentication, the scope query, the audit row). The intent path adds at most 50 ms at p99
(issue 24) when `intent p99 - (direct + API) p99 <= 50 ms`. The other functions had no path
before intents: they are printed against the same baseline, their ratios saying what they
cost beyond a hang-up's.

Hang-ups act on Local/<n>@bench pairs originated through ARI with PBX_SCUSTOMER=3 (so Acme's
administrator may act on them), the other functions on bob's phone (a sipp answering every
call) originated into `bench`; each round runs every function once, interleaved.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests
from sqlalchemy import create_engine, text

from bench.asterisk import preflight
from bench.common import ROOT, Results, percentile
from bench.control_more import FUNCTIONS, Functions, policy_document
from bench.sandbox import ARI, ARI_AUTH, free_port

USER = {"auth_username": "acme", "auth_password": "acme-pass"}
LIMIT_MS = 50.0


class Pbx:
    """`pbxcontrol COMMAND` on `url`, one config file per process, stopped by pid."""

    def __init__(self, workdir: Path, url: str, command: str, machine: bool) -> None:
        self.port = free_port()
        self.config = workdir / f"{command}.ini"
        asterisk = (
            f"[asterisk:1]\nari_url = {ARI}\nusername = {ARI_AUTH[0]}\n"
            f"password = {ARI_AUTH[1]}\napp = pbxcontrol-bench-control\n"
            if machine
            else ""
        )
        self.config.write_text(
            f"[database]\nurl = {url}\n[http]\nhost = 127.0.0.1\nport = {self.port}\n"
            "[logging]\nlevel = WARNING\n[plugins]\nenabled = active_calls\n"
            "[plugin:active_calls]\nactions_per_minute = 0\n" + asterisk
        )
        self.config.chmod(0o600)
        self.command = command
        self.logfile = workdir / f"{command}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log = open(self.logfile, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), self.command],
            stdout=self.log,
            stderr=self.log,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
        )

    def cli(self, *args: str) -> None:
        cmd = [sys.executable, "-m", "pbxcontrol", "--config", str(self.config), *args]
        subprocess.run(cmd, check=True, capture_output=True, cwd=ROOT)

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log.close()


class Rounds:
    """Local calls up, then hung up one way per round; the timings in milliseconds."""

    def __init__(self, api_port: int) -> None:
        self.ari = requests.Session()
        self.ari.auth = ARI_AUTH
        self.api = requests.Session()
        self.hangup = f"http://127.0.0.1:{api_port}/api/json/calls/hangup/"
        self.listed = f"http://127.0.0.1:{api_port}/api/json/calls/active/list/"
        self.n = 200_000 + (os.getpid() % 1000) * 1000
        self.times: dict[str, list[float]] = {}

    def call(self) -> str:
        """A Local call up and listed for Acme; its originated (;1) channel's id."""
        self.n += 1
        resp = self.ari.post(
            f"{ARI}/channels",
            params={
                "endpoint": f"Local/{self.n}@bench",
                "context": "bench",
                "extension": str(self.n),
            },
            json={"variables": {"PBX_SCUSTOMER": "3"}},
            timeout=10,
        )
        resp.raise_for_status()
        channel = resp.json()["id"]
        deadline = time.monotonic() + 10
        while channel not in self._listed():
            if time.monotonic() > deadline:
                raise RuntimeError(f"{channel} not listed for acme within 10 s")
            time.sleep(0.02)
        return channel

    def _listed(self) -> set[str]:
        body = self.api.get(self.listed, params=USER, timeout=10).json()
        return {row["uniqueid"] for row in body.get("data") or []}

    def gone(self, channel: str, started: float) -> float:
        while self.ari.get(f"{ARI}/channels/{channel}", timeout=10).status_code != 404:
            if time.perf_counter() - started > 10:
                raise RuntimeError(f"{channel} still up 10 s after its hangup")
            time.sleep(0.002)
        return (time.perf_counter() - started) * 1000

    def note(self, name: str, ms: float) -> None:
        self.times.setdefault(name, []).append(ms)

    def intent(self, channel: str) -> None:
        started = time.perf_counter()
        body = self.api.get(self.hangup, params={**USER, "uniqueid": channel}, timeout=10).json()
        self.note("intent.answer", (time.perf_counter() - started) * 1000)
        if body["responses"][0]["code"] != "204":
            raise RuntimeError(f"calls/hangup: {body['responses']}")
        self.note("intent.effect", self.gone(channel, started))

    def direct(self, channel: str) -> None:
        started = time.perf_counter()
        resp = self.ari.delete(f"{ARI}/channels/{channel}", timeout=10)
        self.note("direct.answer", (time.perf_counter() - started) * 1000)
        if resp.status_code != 204:
            raise RuntimeError(f"DELETE /channels: HTTP {resp.status_code}")
        self.note("direct.effect", self.gone(channel, started))
        started = time.perf_counter()  # the API's work around the old ARI call
        body = self.api.get(self.hangup, params={**USER, "uniqueid": "1.0"}, timeout=10).json()
        self.note("api.work", (time.perf_counter() - started) * 1000)
        assert body["responses"][0]["code"] == "404", body


def measure(results: Results, engine: str, api_port: int, rounds: int) -> None:
    r = Rounds(api_port)
    more = Functions(api_port, r.ari, r.call)
    for _ in range(3):  # warm: connections, caches, the holder's first claim
        r.intent(r.call())
        r.direct(r.call())
        more.round()
    r.times.clear()
    more.times.clear()
    for _ in range(rounds):
        r.intent(r.call())
        r.direct(r.call())
        more.round()
    t = r.times
    slowest = sorted(t["intent.answer"])[-3:]
    print(f"  {engine}: slowest intent answers {[round(v) for v in slowest]} ms", flush=True)
    old = {
        k: [d + a for d, a in zip(t[f"direct.{k}"], t["api.work"], strict=True)]
        for k in ("answer", "effect")
    }
    for what in ("answer", "effect"):
        for p in (50, 99):
            new, base = percentile(t[f"intent.{what}"], p), percentile(old[what], p)
            limit = what == "answer" and p == 99
            results.add(
                f"control.{engine}.hangup_{what}_p{p}",
                new,
                "ms",
                baseline=base,
                baseline_name="direct path: ARI DELETE + the API's work, same run",
                target=f"<= base + {LIMIT_MS:g}" if limit else "",
                met=(new - base <= LIMIT_MS) if limit else None,
                note=f"{rounds} hangups each way, interleaved",
            )
    _others(results, engine, more.times, old, rounds)


def _others(
    results: Results, engine: str, t: dict[str, list[float]], old: dict, rounds: int
) -> None:
    """Every other function against the same baseline: the hang-up's direct path (they had
    no path before intents; the intent's overhead is what they share with calls/hangup)."""
    for name in FUNCTIONS:
        for what in ("answer", "effect"):
            for p in (50, 99):
                results.add(
                    f"control.{engine}.{name}_{what}_p{p}",
                    percentile(t[f"{name}.{what}"], p),
                    "ms",
                    baseline=percentile(old[what], p),
                    baseline_name="direct path: ARI DELETE + the API's work, same run",
                    note=f"{rounds} requests, interleaved with the hangups",
                )


def run(results: Results, quick: bool) -> None:
    preflight()
    rounds = 15 if quick else 100
    with tempfile.TemporaryDirectory(prefix="pbx-bench-control-") as tmp:
        work = Path(tmp)
        # The functions act on real legs: three of bob's calls a round, on each engine.
        with bob_answers(work, 2 * 3 * (rounds + 3) + 10):
            _both(results, work, rounds)


@contextlib.contextmanager
def bob_answers(work: Path, calls: int):
    """Bob's phone: a sipp answering `calls` calls at once, stopped by its pid."""
    # By its path: bench/sandbox.py shadows the repository's sandbox/ package for bench/run.py.
    spec = importlib.util.spec_from_file_location("sippctl", ROOT / "sandbox" / "sippctl.py")
    assert spec is not None and spec.loader is not None
    sippctl = importlib.util.module_from_spec(spec)
    sys.modules["sippctl"] = sippctl  # its dataclasses look their module up
    spec.loader.exec_module(sippctl)
    pool = sippctl.SippPool(work / "sipp", tag="bench-control")
    try:
        pool.phone_answers("bob", ring_ms=0, calls=calls, timeout_s=None)
        yield
    finally:
        pool.stop()


def _both(results: Results, work: Path, rounds: int) -> None:
    serve = Pbx(work, f"sqlite:///{work / 'pbx.db'}", "serve", machine=True)
    try:
        serve.cli("provision", str(policy_document(work)))
        serve.start()
        _wait_http(serve)
        time.sleep(2)  # the recorder holds the lease and listens (a call made before is
        # reconciled without its PBX_* variables: nobody's)
        measure(results, "sqlite", serve.port, rounds)
    finally:
        serve.stop()
    with _postgresql() as url:
        record = Pbx(work, url, "record", machine=True)
        api = Pbx(work, url, "api", machine=False)
        try:
            record.start()
            api.start()
            _wait_http(api)
            time.sleep(2)  # the recorder holds the lease and reconciled
            measure(results, "postgresql", api.port, rounds)
        finally:
            api.stop()
            record.stop()


def _wait_http(pbx: Pbx) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(requests.RequestException):
            requests.get(f"http://127.0.0.1:{pbx.port}/api/json/calls/active/list/", timeout=2)
            return
        if pbx.proc is None or pbx.proc.poll() is not None:
            break
        time.sleep(0.2)
    raise RuntimeError(f"pbxcontrol {pbx.command} did not start: see {pbx.config.parent}")


@contextlib.contextmanager
def _postgresql():
    """A new database on the PostgreSQL sandbox, initialised and provisioned, dropped after."""
    from bench.fleetdb import sandbox_url

    admin_url = sandbox_url()
    name = f"pbx_bench_control_{os.getpid()}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f"CREATE DATABASE {name}"))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        with tempfile.TemporaryDirectory() as tmp:
            setup = Pbx(Path(tmp), url, "api", machine=False)  # its config, never started
            setup.cli("initdb")
            setup.cli("provision", str(policy_document(Path(tmp))))
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()
