"""API workers are supervised: a dead worker is logged and replaced, a tight loop backs off,
and the fleet's metrics are summed over the workers (prometheus-client's multiprocess mode)."""

import contextlib
import json
import os
import queue
import re
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import urllib.request
from pathlib import Path

from tests.conftest import LIST, alive, children_of, provision_tree, start_server, write_config


def get(url):
    with urllib.request.urlopen(url, timeout=10) as resp:  # a new connection each time
        return resp.read().decode()


def api_with_workers(tmp_path, processes=2):
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace("port = 0\n", f"port = 0\nprocesses = {processes}\n")
    )
    provision_tree(config)
    return config


class LogLines:
    """A server's stderr read by a thread, so a wait for a line can time out (a blocking
    readline would hang the test if the line never came); `seen` holds lines already read
    (start_server reads up to "listening on", which may come after the workers' lines)."""

    def __init__(self, proc, seen):
        self.lines = list(seen)
        self._queue = queue.SimpleQueue()
        threading.Thread(target=self._pump, args=(proc.stderr,), daemon=True).start()

    def _pump(self, stream):
        for line in stream:
            self._queue.put(line)

    def wait_for(self, pattern, timeout=20.0, start=0):
        """The first match of `pattern` in the lines from index `start` on; (match, index)."""
        deadline = time.monotonic() + timeout
        index = start
        while True:
            while index < len(self.lines):
                match = re.search(pattern, self.lines[index])
                index += 1
                if match:
                    return match, index
            try:
                self.lines.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                raise AssertionError(
                    f"no line matching {pattern!r} in:\n" + "".join(self.lines)
                ) from None


def test_a_killed_worker_is_logged_and_replaced_and_the_service_keeps_answering(tmp_path):
    config = api_with_workers(tmp_path)
    proc, base, seen = start_server(config, "--log-level", "INFO")
    log = LogLines(proc, seen)
    try:
        (supervisor,) = children_of(proc.pid)
        started, at = log.wait_for(r"API worker 1 started \(pid (\d+)\)")
        worker = int(started.group(1))
        assert children_of(supervisor) == [worker]
        os.kill(worker, signal.SIGKILL)
        _, at = log.wait_for(
            rf"API worker 1 \(pid {worker}\) was killed by signal 9 \(SIGKILL\); "
            "forking a replacement",
            start=at,
        )
        again, _ = log.wait_for(r"API worker 1 started \(pid (\d+)\)", start=at)
        replacement = int(again.group(1))
        assert replacement != worker and children_of(supervisor) == [replacement]
        for _ in range(20):
            body = json.loads(get(f"{base}{LIST}?auth_username=acme;auth_password=acme-pass"))
            assert body["responses"][0]["code"] == "200"
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        log.wait_for(r"stopped$")
        assert not alive(replacement) and not alive(supervisor)
        assert "Traceback" not in "".join(log.lines)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_metrics_of_every_worker_are_summed_in_any_scrape(tmp_path):
    config = api_with_workers(tmp_path, processes=3)
    proc, base, _ = start_server(config)
    try:
        for _ in range(30):
            get(f"{base}{LIST}?auth_username=acme;auth_password=acme-pass")
        counted = 'pbxcontrol_http_requests_total{code="200",function="calls/active/list"} 30.0'
        for _ in range(6):  # whichever process answers the scrape
            assert counted in get(base + "/metrics")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


WORKERS_THAT_DIE = textwrap.dedent("""
    import logging, os, sys
    from pbxcontrol.service import supervisor
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    sup = supervisor.Supervisor(lambda: os._exit(3), 1)
    sys.exit(sup.run())
""")


def test_workers_dying_in_a_tight_loop_back_off_with_an_error():
    proc = subprocess.Popen(
        [sys.executable, "-c", WORKERS_THAT_DIE], stderr=subprocess.PIPE, text=True
    )
    time.sleep(3.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert "API worker 1 (pid " in err and ") exited with status 3; forking a replacement" in err
    assert "API workers are dying in a loop (6 in 30 s): next fork in 1 s" in err
    # Without the back-off this loop forks hundreds of workers in 3 s.
    assert err.count("started (pid") <= 9, err


def owner_of(client: socket.socket, pids: list[int]) -> int | None:
    """Which of `pids` holds the server end of `client`'s connection (/proc/net/tcp)."""
    port = client.getsockname()[1]
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[2].split(":")[1], 16) == port:  # the peer of the server end is us
            inodes.add(fields[9])
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                if os.readlink(fd) in {f"socket:[{inode}]" for inode in inodes}:
                    return pid
    return None


def open_stream(base: str) -> tuple[socket.socket, str]:
    """A stream of acme's: (its socket, the first line of the answer and what came with it)."""
    host, port = base.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=10)
    query = "auth_username=acme;auth_password=acme-pass"
    sock.sendall(f"GET /api/stream/calls/active/list/?{query} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    answer = b""
    while b"\r\n\r\n" not in answer or (b"event-stream" in answer and b"snapshot" not in answer):
        chunk = sock.recv(65536)
        if not chunk:
            break
        answer += chunk
    return sock, answer.decode(errors="replace")


def test_a_killed_workers_stream_slots_are_free_again(tmp_path):
    """SPEC §12: the streams a worker held when it was killed no longer count against their
    person's `streams_per_person` (2 here): the supervisor frees them when it reaps it."""
    config = api_with_workers(tmp_path, processes=3)
    config.write_text(config.read_text().replace("[http]\n", "[http]\nstreams_per_person = 2\n"))
    proc, base, seen = start_server(config, "--log-level", "INFO")
    log = LogLines(proc, seen)
    held: list[socket.socket] = []
    try:
        (supervisor,) = children_of(proc.pid)
        log.wait_for(r"API worker 2 started")
        workers = children_of(supervisor)
        in_workers: dict[int, list[socket.socket]] = {}
        for _ in range(40):  # until both of acme's streams are held by workers
            sock, answer = open_stream(base)
            assert "text/event-stream" in answer, answer
            owner = owner_of(sock, workers)
            if owner is None:  # the first process took it: give it back, try again
                sock.close()
                time.sleep(0.2)
                continue
            in_workers.setdefault(owner, []).append(sock)
            held.append(sock)
            if len(held) == 2:
                break
        assert len(held) == 2, "no two streams landed in the workers"
        _, answer = open_stream(base)
        assert '"code":"429"' in answer  # the person is at the limit
        for worker in in_workers:
            os.kill(worker, signal.SIGKILL)
        for worker in in_workers:
            log.wait_for(rf"\(pid {worker}\) was killed by signal 9")
        time.sleep(0.5)
        for _ in range(2):  # both slots are free again
            sock, answer = open_stream(base)
            assert "text/event-stream" in answer, answer
            held.append(sock)
    finally:
        for sock in held:
            sock.close()
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
