"""The systemd unit (its security score, Type=notify) and the notify protocol as a real
`pbxcontrol serve` speaks it to a fake $NOTIFY_SOCKET."""

import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pbxcontrol.service import notify
from tests.conftest import LIST, provision_tree, write_config

# A machine whose Asterisk is not there: its recorder takes the lease and renews it, its
# writer waits for events that never come (idle, not stuck).
NO_ASTERISK = """
    [recorder]
    takeover_seconds = 30
    heartbeat = 1
    [asterisk:1]
    ari_url = http://127.0.0.1:9/ari
    username = u
    password = p
    """
UNITS_DIR = Path(__file__).resolve().parents[2] / "etc" / "systemd"
#: A unit for each way to run it (SPEC §12 Units): file -> the command it runs.
UNITS = {
    "pbxcontrol.service": "serve",
    "pbxcontrol-record.service": "record",
    "pbxcontrol-api.service": "api",
}
INSTALL_HINT = (
    "systemd-analyze is missing: install Debian's `systemd` package (apt-get install systemd; "
    "version 252 or later for --offline), which brings systemd-analyze without running systemd"
)


def settings(unit: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of each setting of a unit file, in order."""
    found, section = [], ""
    for line in (UNITS_DIR / unit).read_text().splitlines():
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
        elif "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            found.append((section, key, value))
    return found


def test_etc_systemd_holds_a_unit_for_each_way_to_run_it():
    assert sorted(p.name for p in UNITS_DIR.glob("*.service")) == sorted(UNITS)


@pytest.mark.parametrize("unit", UNITS)
def test_unit_scores_3_or_better_in_systemd_analyze_security(unit):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.fail(INSTALL_HINT, pytrace=False)
    done = subprocess.run(
        [analyze, "security", "--offline=true", str(UNITS_DIR / unit)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if "--offline" in done.stderr and "unrecognized option" in done.stderr:
        pytest.fail(INSTALL_HINT + f"; this one is older: {done.stderr.strip()}", pytrace=False)
    match = re.search(r"Overall exposure level for (\S+): ([\d.]+)", done.stdout + done.stderr)
    assert match, done.stdout + done.stderr
    assert match.group(1) == unit
    assert float(match.group(2)) <= 3.0, done.stdout


@pytest.mark.parametrize("unit", UNITS)
def test_unit_is_notify_with_watchdog_file_limit_and_no_restart_on_config_errors(unit):
    lines = {key: value for section, key, value in settings(unit) if section == "Service"}
    assert lines["Type"] == "notify" and int(lines["WatchdogSec"]) > 0
    assert int(lines["LimitNOFILE"]) >= 65536  # 4,096 streams per process; systemd gives 1,024
    assert lines["Restart"] == "on-failure"  # a watchdog timeout is a failure too
    assert lines["RestartPreventExitStatus"] == "2"  # pbxcontrol's exit status for a bad config
    assert lines["NotifyAccess"] == "exec"  # initdb in ExecStartPre extends the start timeout
    # "-": a database not answering yet (initdb exits 1) must not stop the start (SPEC §12)
    assert lines["ExecStartPre"] == "-/usr/local/bin/pbxcontrol initdb"
    assert lines["ExecStart"] == f"/usr/local/bin/pbxcontrol {UNITS[unit]}"
    assert UNITS[unit] in cli_commands()


def test_the_units_are_alike_but_for_what_they_run():
    """One sandbox, one restart policy: the units differ only in their command, their
    description and (record, api) in conflicting with serve on the same host."""
    differ = {("Service", "ExecStart"), ("Unit", "Description"), ("Unit", "Conflicts")}

    def kept(unit: str) -> list[tuple[str, str, str]]:
        return [s for s in settings(unit) if s[:2] not in differ]

    serve = kept("pbxcontrol.service")
    assert ("Service", "SystemCallFilter", "@system-service") in serve
    for unit in UNITS:
        assert kept(unit) == serve, unit
        conflicts = [v for sec, key, v in settings(unit) if key == "Conflicts"]
        assert conflicts == ([] if unit == "pbxcontrol.service" else ["pbxcontrol.service"])


def cli_commands() -> set[str]:
    from pbxcontrol.cli import parser

    sub = next(a for a in parser()._actions if a.dest == "command")
    return set(sub.choices)  # type: ignore[arg-type]


class FakeNotifySocket:
    """What systemd listens on: a datagram socket in a temp dir."""

    def __init__(self, directory: Path):
        self.path = str(directory / "notify.sock")
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(self.path)
        self.messages: list[tuple[float, str]] = []

    def read_until(self, wanted: str, timeout: float) -> float:
        """The time `wanted` came (reading every message meanwhile)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                text = self.sock.recv(4096).decode()
            except TimeoutError:
                break
            self.messages.append((time.monotonic(), text))
            if text == wanted:
                return time.monotonic()
        raise AssertionError(f"no {wanted!r} in {[m for _, m in self.messages]}")


@pytest.mark.parametrize("command", UNITS.values())
def test_each_command_says_ready_pings_the_watchdog_and_says_stopping_on_sigterm(tmp_path, command):
    """What each unit runs, with a machine to record (its Asterisk is not there: the
    recorder stands by or waits, which is no reason to stop pinging) and two API processes."""
    config = write_config(tmp_path, NO_ASTERISK)
    config.write_text(config.read_text().replace("port = 0\n", "port = 0\nprocesses = 2\n"))
    provision_tree(config)
    fake = FakeNotifySocket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": fake.path, "WATCHDOG_USEC": "600000"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), command],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        fake.read_until("READY=1", 30)
        first = fake.read_until("WATCHDOG=1", 5)
        second = fake.read_until("WATCHDOG=1", 5)
        assert 0.2 < second - first < 1.0  # every WATCHDOG_USEC / 2
        for _ in range(4):  # and on, for several times the bound (0.6 s)
            fake.read_until("WATCHDOG=1", 1)
        proc.send_signal(signal.SIGTERM)
        fake.read_until("STOPPING=1", 10)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "watchdog:" not in err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_watchdog_stops_pinging_when_the_loop_does_not_turn(tmp_path, monkeypatch):
    fake = FakeNotifySocket(tmp_path)
    monkeypatch.setenv("NOTIFY_SOCKET", fake.path)
    turning = [True]

    def pull(thunk):  # the loop runs what it is handed, while it turns
        if turning[0]:
            thunk()

    watchdog = notify.Watchdog({"the loop": notify.monotonic_probe(pull, 0.3)}, 0.1)
    watchdog.start()
    try:
        fake.read_until("WATCHDOG=1", 2)
        turning[0] = False
        time.sleep(0.5)
        fake.sock.settimeout(0.05)
        with pytest.raises(TimeoutError):
            while True:
                fake.sock.recv(4096)
        with pytest.raises(TimeoutError):
            fake.sock.settimeout(0.6)
            fake.sock.recv(4096)
    finally:
        watchdog.stop()


def test_initdb_asks_for_more_start_time_while_it_migrates(tmp_path):
    config = write_config(tmp_path)
    fake = FakeNotifySocket(tmp_path)
    env = {**os.environ, "NOTIFY_SOCKET": fake.path}
    done = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "initdb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    fake.read_until("EXTEND_TIMEOUT_USEC=60000000", 1)


MDWE = (
    "import ctypes, os, sys; "
    "assert ctypes.CDLL(None).prctl(65, 1, 0, 0, 0) == 0; "  # PR_SET_MDWE, REFUSE_EXEC_GAIN
    "os.execv(sys.executable, [sys.executable, '-m', 'pbxcontrol', *sys.argv[1:]])"
)


def test_serves_under_memory_deny_write_execute(tmp_path, db_url):
    """MemoryDenyWriteExecute=yes in the unit: the kernel's PR_SET_MDWE (Linux 6.3+) refuses
    the same mappings; a login (argon2) and a listing on the engine under test still work."""
    if ctypes.CDLL(None).prctl(66, 0, 0, 0, 0) < 0:
        pytest.fail("this kernel has no PR_SET_MDWE (Linux 6.3 or later is needed)", pytrace=False)
    config = write_config(tmp_path, db=db_url)
    config.write_text(config.read_text().replace("port = 0\n", "port = 0\nprocesses = 2\n"))
    provision_tree(config)
    proc = subprocess.Popen(
        [sys.executable, "-c", MDWE, "--config", str(config), "serve"],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        base = None
        for _ in range(200):
            line = proc.stderr.readline()
            match = re.search(r"listening on (http://[\d.]+:\d+)/api/json/", line)
            if match:
                base = match.group(1)
                break
        assert base, "did not start"
        import urllib.request

        for password in ("acme-pass", "wrong"):
            url = f"{base}{LIST}?auth_username=acme;auth_password={password}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                assert resp.status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
