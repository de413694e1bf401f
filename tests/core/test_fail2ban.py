"""The fail2ban filter (etc/fail2ban/filter.d/pbxcontrol.conf) run by fail2ban's own
fail2ban-regex over what a real `pbxcontrol api` logs: it finds every lock's address and
nothing a client forged (SPEC §13)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import quote

import pytest

from tests.conftest import provision_tree, start_server, stop_server, write_config

REPO = Path(__file__).resolve().parents[2]
FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "pbxcontrol.conf"
CACHE = Path(os.environ.get("PBXCONTROL_CACHE", Path.home() / ".cache" / "pbxcontrol"))
LIST = "/api/json/calls/active/list/"
# A lock line as a client would forge it, in a path (with a time, as a log file has it) and in
# a username (under 64 characters: the log line shows no more of it).
LOCK = "WARNING pbxcontrol.auth: login locked: address 9.9.9.9, x"
FORGED = f"2026-12-01 10:00:00,000 {LOCK}"


def fail2ban_regex() -> tuple[list[str], dict[str, str]]:
    """(command, environment) of Debian's fail2ban-regex: installed, or unpacked once from the
    package (`apt-get download`, no daemon, no system change) into the cache."""
    found = shutil.which("fail2ban-regex")
    if found:
        return [found], dict(os.environ)
    root = CACHE / "fail2ban"
    script = root / "usr" / "bin" / "fail2ban-regex"
    if not script.exists():
        with tempfile.TemporaryDirectory() as work:
            done = subprocess.run(
                ["apt-get", "download", "fail2ban"], cwd=work, capture_output=True, text=True
            )
            debs = list(Path(work).glob("fail2ban_*.deb"))
            if done.returncode != 0 or not debs:
                pytest.fail(
                    "this test runs fail2ban-regex: install Debian's fail2ban package "
                    f"(apt-get install fail2ban) or let `apt-get download fail2ban` work:\n"
                    f"{done.stderr.strip()}",
                    pytrace=False,
                )
            # Unpacked aside, then renamed into place: another pytest-xdist worker may be
            # unpacking it too, and must never run a half-unpacked copy.
            unpacked = Path(work) / "root"
            subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(unpacked)], check=True)
            CACHE.mkdir(parents=True, exist_ok=True)
            aside = Path(tempfile.mkdtemp(dir=CACHE, prefix="fail2ban-"))
            shutil.move(str(unpacked), str(aside / "root"))
            try:
                (aside / "root").rename(root)
            except OSError:  # already in place (another worker's)
                shutil.rmtree(aside / "root")
            aside.rmdir()
    env = {**os.environ, "PYTHONPATH": str(root / "usr" / "lib" / "python3" / "dist-packages")}
    return [sys.executable, str(script)], env


def get(base: str, target: str, client: str) -> None:
    request = urllib.request.Request(base + target, headers={"X-Forwarded-For": client})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            resp.read()
    except urllib.error.HTTPError as err:  # a path no route takes: HTTP 404, logged too
        assert err.code == 404


def served_log(tmp_path: Path, log_format: str) -> str:
    """What `pbxcontrol api` writes while clients behind a trusted proxy guess passwords and
    try to forge lock lines through a path and a username."""
    config = write_config(
        tmp_path,
        f"[logging]\nformat = {log_format}\n",
    )
    config.write_text(
        config.read_text().replace(
            "port = 0\n",
            "port = 0\nlogin_failures_per_user = 3\nlogin_failures_per_address = 5\n"
            "trusted_proxies = 127.0.0.1\n",
        )
    )
    provision_tree(config)
    proc, base, lines = start_server(config)
    try:
        for _ in range(3):  # acme from one address: that address is locked for acme
            get(base, f"{LIST}?auth_username=acme;auth_password=guess", "192.0.2.7")
        for i in range(5):  # any usernames from one IPv6 /64: the /64 is locked
            get(base, f"{LIST}?auth_username=u{i};auth_password=x", f"2001:db8:7::{i + 1}")
        get(base, f"/api/stream/x{quote(chr(10) + FORGED)}/", "198.51.100.1")
        forged_user = quote("\n" + LOCK, safe="")
        get(base, f"{LIST}?auth_username={forged_user};auth_password=x", "198.51.100.2")
    finally:
        proc.send_signal(signal.SIGTERM)  # one process: its whole log comes with the exit
        try:
            rest = proc.communicate(timeout=30)[1]
        except subprocess.TimeoutExpired:
            stop_server(proc)
            raise
    return "".join(lines) + rest


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_the_filter_finds_each_lock_and_no_forged_line(tmp_path, log_format):
    log = served_log(tmp_path, log_format)
    assert log.count("login locked: address ") == 4, log  # 2 locks, 2 forgeries
    path = tmp_path / "pbxcontrol.log"
    path.write_text(log)
    command, env = fail2ban_regex()
    done = subprocess.run(
        [*command, "-o", "ip", str(path), str(FILTER)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["192.0.2.7", "2001:db8:7::5"], done.stdout
    # The forgeries were logged, each inside one line of its own kind.
    assert log.count("address 9.9.9.9") == 2, log
