"""`make demo` for real: live legs in the printed curl commands, Ctrl-C stops everything."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests

from tests.e2e.support import REPO

pytestmark = pytest.mark.e2e


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        return sock.getsockname()[1]


def children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def check_wallboard_urls(text: str) -> None:
    """One wallboard URL per demo person: the page loads and the token in its fragment is
    accepted by the list, each person seeing their own scope."""
    found = re.findall(
        r"# (\w+): .*\n\s+(http://127\.0\.0\.1:\d+/wallboard/)#auth_token=(\S+)", text
    )
    assert [user for user, _url, _token in found] == ["admin", "reseller", "acme", "beta"], text
    for user, url, token in found:
        page = requests.get(url, timeout=5)
        assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
        assert 'name="auth_username"' in page.text
        api = url.replace("/wallboard/", "/api/json/calls/active/list/")
        body = requests.get(api, params={"auth_token": token}, timeout=5).json()
        assert body["responses"][0]["code"] == "200", (user, body)
        scopes = url.replace("/wallboard/", "/api/json/calls/active/scopes/")
        data = requests.get(scopes, params={"auth_token": token}, timeout=5).json()["data"]
        assert data["username"] == user


def test_demo_shows_live_calls_and_stops_everything_on_ctrl_c(idle, tmp_path):
    ari = idle
    out = tmp_path / "demo.out"
    with open(out, "wb") as sink:
        demo = subprocess.Popen(
            [
                sys.executable,
                "scripts/demo.py",
                "--port",
                str(free_port()),
                "--var",
                str(tmp_path / "var"),
            ],
            cwd=REPO,
            stdout=sink,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    started: list[int] = []
    try:
        deadline = time.monotonic() + 60
        while "Ctrl-C stops everything" not in out.read_text(errors="replace"):
            assert demo.poll() is None, out.read_text(errors="replace")
            assert time.monotonic() < deadline, out.read_text(errors="replace")
            time.sleep(0.2)
        started = children(demo.pid)
        assert len(started) == 7  # six sipp, one pbxcontrol serve
        text = out.read_text()
        urls = re.findall(r"curl '(http://127\.0\.0\.1:\d+/api/json/[^']+)'", text)
        seed = next(u for u in urls if "auth_username=acme;auth_password=acme-pass" in u)
        deadline = time.monotonic() + 20
        while True:  # all three calls answered: alice's and the trunk's legs, bob's and carol's
            data = requests.get(seed, timeout=5).json()["data"]
            channels = sorted(r["channel"].split("-")[0] for r in data if r["status"] == "Up")
            if channels == ["PJSIP/alice", "PJSIP/bob", "PJSIP/carol", "PJSIP/trunk1"]:
                break
            assert time.monotonic() < deadline, data
            time.sleep(0.3)
        for url in urls:
            body = requests.get(url, timeout=5).json()
            assert body["responses"][0]["code"] == "200", (url, body)
        system = next(u for u in urls if "customer=system" in u)
        assert len(requests.get(system, timeout=5).json()["data"]) >= 6
        check_wallboard_urls(text)
    finally:
        demo.send_signal(signal.SIGINT)
        code = demo.wait(60)
    assert code == 0, out.read_text()
    time.sleep(0.5)
    alive = [
        pid
        for pid in started
        if subprocess.run(["kill", "-0", str(pid)], capture_output=True).returncode == 0
    ]
    assert not alive, f"left running: {alive}"
    assert not [c for c in ari.channels() if c["name"].startswith(("PJSIP/bob-", "PJSIP/dave-"))]
