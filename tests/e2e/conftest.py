"""Fixtures of the end-to-end tier: the sandbox Asterisk, `pbxcontrol serve`, sipp parties."""

from __future__ import annotations

import os
import time

import pytest

from sandbox.sippctl import ARI_URL, Ari, SippPool, sandbox, sandbox_running
from tests.e2e.support import PbxServer, converge, hang_up_ours

APP = f"pbxcontrol-e2e-{os.getpid()}"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.when == "call":
        item.e2e_failed = report.failed


def show_log_if_failed(request, server: PbxServer) -> None:
    if getattr(request.node, "e2e_failed", False):
        print(f"--- pbxcontrol serve log ({server.app}) ---\n{server.tail(200)}")


@pytest.fixture(scope="session")
def asterisk():
    """The sandbox Asterisk: started if needed (and then stopped at the end), never skipped."""
    started = False
    if not sandbox_running():
        up = sandbox("up")
        if up.returncode != 0:
            pytest.fail(
                "scripts/asterisk-sandbox up failed; the e2e tier needs the sandbox "
                f"Asterisk:\n{up.stderr.strip()}\n{up.stdout.strip()}",
                pytrace=False,
            )
        started = True
    ari = Ari()
    assert ari.answers(), f"the sandbox runs but ARI does not answer at {ARI_URL}"
    hang_up_ours(ari)
    try:
        yield ari
    finally:
        hang_up_ours(ari)
        if started:
            sandbox("down")


@pytest.fixture(scope="session")
def pbx(asterisk, tmp_path_factory):
    """One `pbxcontrol serve` for the call scenarios; it must exit 0 on SIGTERM."""
    server = PbxServer(tmp_path_factory.mktemp("serve"), ARI_URL, APP)
    server.provision()
    try:
        server.start()
        yield server
    finally:
        status = server.stop()
    assert status == 0, f"pbxcontrol serve exited with {status} on SIGTERM:\n{server.tail()}"


@pytest.fixture
def new_pbx(asterisk, tmp_path, request):
    """A factory of extra servers (own DB and app name), each stopped and checked at the end."""
    servers: list[PbxServer] = []

    def make(ari_url: str = ARI_URL, name: str = "x") -> PbxServer:
        server = PbxServer(tmp_path / f"serve-{name}", ari_url, f"{APP}-{name}")
        server.provision()
        servers.append(server)
        return server

    try:
        yield make
    finally:
        for server in servers:
            show_log_if_failed(request, server)
        statuses = [(s, s.stop()) for s in servers]
    for server, status in statuses:
        assert status == 0, f"pbxcontrol serve exited with {status}:\n{server.tail()}"


@pytest.fixture
def sipp(asterisk, tmp_path, request):
    pool = SippPool(tmp_path / "sipp", tag=f"e2e{os.getpid()}-{request.node.name[-20:]}")
    try:
        yield pool
    finally:
        hang_up_ours(asterisk)  # first, while sipp still answers Asterisk's BYEs
        pool.stop()


@pytest.fixture
def idle(asterisk, pbx):
    """Start from a system view equal to Asterisk's channels."""
    hang_up_ours(asterisk)
    time.sleep(0.2)
    converge(pbx, asterisk, 10)
    return asterisk
