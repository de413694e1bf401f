"""The handover from the waiting server (pbxcontrol.service.starting, HTTP 503 while the
database does not answer) to the real server on the same listening socket never cuts a
response (SPEC §12): a request the waiting server has accepted is answered whole, and
clients calling in a loop across the handover get every response whole, the 503s first,
then the real server's."""

from __future__ import annotations

import socket
import threading
import time

import orjson
import requests
from waitress.server import create_server
from waitress.wasyncore import close_all

from pbxcontrol.service import starting
from pbxcontrol.service.server import listen

HEAD = b"GET /health HTTP/1.1\r\nHost: pbx\r\n"


def read_response(conn: socket.socket) -> tuple[bytes, dict[str, str], bytes]:
    """Status line, headers and body of one response read to the connection's end."""
    data = b""
    while chunk := conn.recv(65536):
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    headers = dict(line.decode().lower().split(": ", 1) for line in lines)
    return status, headers, body


def test_a_request_accepted_before_the_handover_is_answered_whole():
    sock = listen("127.0.0.1", 0)
    waiting = starting.WaitingServer(sock)
    try:
        conn = socket.create_connection(sock.getsockname()[:2], timeout=10)
        conn.sendall(HEAD)  # the request's first half: in flight when the handover starts
        deadline = time.monotonic() + 10
        while not waiting._server.active_channels:  # accepted by the waiting server
            assert time.monotonic() < deadline, "the waiting server did not accept"
            time.sleep(0.01)
        closing = threading.Thread(target=waiting.close)
        closing.start()
        closing.join(0.5)  # the server waits for the request (at most starting.DRAIN s)
        conn.sendall(b"\r\n")
        status, headers, body = read_response(conn)
        closing.join(10)
        assert not closing.is_alive()
        assert status == b"HTTP/1.1 503 Service Unavailable"
        assert headers["connection"] == "close"
        assert len(body) == int(headers["content-length"])
        assert orjson.loads(body)["database"] == "unreachable"
    finally:
        sock.close()


def served_app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "6")])
    return [b"served"]


def test_clients_in_a_loop_across_the_handover_get_every_response_whole():
    sock = listen("127.0.0.1", 0)
    host, port = sock.getsockname()[:2]
    base = f"http://{host}:{port}"
    seen: list[list[int]] = [[] for _ in range(4)]
    failures: list[BaseException] = []
    done = threading.Event()

    def client(n: int) -> None:
        session = requests.Session() if n % 2 else requests  # keep-alive, or not
        while not done.is_set():
            try:
                answer = session.get(base + "/health", timeout=10)
                seen[n].append(answer.status_code)
                if answer.status_code == 200:
                    assert answer.content == b"served"
                else:
                    assert orjson.loads(answer.content)["database"] == "unreachable"
            except BaseException as exc:  # noqa: BLE001 - every failure is the test's finding
                failures.append(exc)
                return

    clients = [threading.Thread(target=client, args=(n,)) for n in range(4)]
    waiting = starting.WaitingServer(sock)
    server = None
    try:
        for thread in clients:
            thread.start()
        time.sleep(0.5)
        waiting.close()
        server = create_server(served_app, sockets=[sock], threads=2, asyncore_use_poll=True)
        threading.Thread(target=server.run, daemon=True).start()
        time.sleep(0.5)
    finally:
        done.set()
        for thread in clients:
            thread.join(15)
        if server is not None:
            server.trigger.pull_trigger(lambda: close_all(server._map))
            server.task_dispatcher.shutdown(timeout=5)
        sock.close()
    assert failures == []
    for codes in seen:  # each client: 503s, then only 200s
        assert codes.count(503) >= 3 and codes.count(200) >= 3, codes
        assert codes == sorted(codes, reverse=True), codes
