"""`pbxcontrol serve` as a real process: real HTTP on loopback, clean stop on SIGTERM."""

import json
import re
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

from tests.conftest import TREE, write_config


def start(config, *args):
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), *args, "serve"],
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 30
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        match = re.search(r"listening on (http://[\d.]+:\d+)/api/json/", line)
        if match:
            return proc, match.group(1), lines
        if proc.poll() is not None:
            break
    proc.kill()
    pytest.fail("server did not start:\n" + "".join(lines))


@pytest.fixture
def served(tmp_path):
    config = write_config(
        tmp_path,
        """
        [asterisk:1]
        ari_url = http://127.0.0.1:9/ari
        username = pbxcontrol
        password = ari-secret-123
        """,
    )
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(TREE))
    subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "provision", str(doc)],
        check=True,
        capture_output=True,
    )
    proc, base, lines = start(config)
    yield proc, base, lines
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def get(url, data=None):
    with urllib.request.urlopen(url, data=data, timeout=10) as resp:
        return resp.status, resp.headers["Content-Type"], json.loads(resp.read())


def test_serves_over_real_http_without_asterisk_and_stops_on_sigterm(served):
    proc, base, lines = served
    status, ctype, body = get(
        base + "/api/json/calls/active/list/?auth_username=acme;auth_password=acme-pass"
    )
    assert (status, ctype) == (200, "application/json; charset=utf-8")
    assert body == {"responses": [{"code": "200", "key": "", "message": "OK"}], "data": []}
    status, _, body = get(
        base + "/api/json/calls/active/list", data=b"auth_username=acme&auth_password=nope"
    )
    assert (status, body["responses"][0]["code"]) == (200, "401")
    status, _, body = get(base + "/api/json/no/such/")
    assert (status, body["responses"][0]["code"]) == (200, "404")
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0
    log = "".join(lines) + err
    assert "SIGTERM received: stopping" in log and "stopped" in log
    for secret in ("acme-pass", "ari-secret-123"):
        assert secret not in log
    assert "Traceback" not in log


def test_sigint_stops_too(served):
    proc, base, _ = served
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=20)
    assert proc.returncode == 0


def test_busy_port_is_a_one_line_error(served, tmp_path):
    _, base, _ = served
    port = base.rsplit(":", 1)[1]
    other = tmp_path / "other"
    other.mkdir()
    config = write_config(other)
    config.write_text(config.read_text().replace("port = 0", f"port = {port}"))
    proc = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "api"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_several_processes_share_the_port_and_all_stop_on_sigterm(tmp_path):
    config = write_config(tmp_path, "")
    config.write_text(config.read_text().replace("port = 0\n", "port = 0\nprocesses = 3\n"))
    doc = tmp_path / "doc.json"
    doc.write_text(json.dumps(TREE))
    subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "provision", str(doc)],
        check=True,
        capture_output=True,
    )
    proc, base, lines = start(config)
    try:
        children = _children(proc.pid)
        assert len(children) == 2
        for _ in range(20):
            _, _, body = get(
                base + "/api/json/calls/active/list/?auth_username=acme;auth_password=acme-pass"
            )
            assert body["responses"][0]["code"] == "200"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert not [pid for pid in children if _alive(pid)]
    finally:
        if proc.poll() is None:
            proc.kill()


def stop(proc) -> None:
    """SIGTERM, as systemd stops it: the first process stops its API workers too. A SIGKILL of
    the first process alone would leave the workers serving."""
    import os

    children = _children(proc.pid) if proc.poll() is None else []
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    for pid in children:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


def _children(pid: int) -> list[int]:
    from pathlib import Path

    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0
    except OSError:
        return False
