"""Big bodies leave waitress from the app's own bytes (pbxcontrol.http.body), intact."""

import http.client
import socket
import threading

import pytest

from pbxcontrol.http.body import ZERO_COPY_FROM, BytesBody
from pbxcontrol.service.server import listen, make_server

SIZES = (10, ZERO_COPY_FROM - 1, ZERO_COPY_FROM, 300_000, 3_000_000)


def body_of(size: int) -> bytes:
    return bytes(i % 251 for i in range(size))


@pytest.fixture
def server():
    bodies = {size: body_of(size) for size in SIZES}

    def app(environ, start_response):
        body = bodies[int(environ["PATH_INFO"].strip("/"))]
        start_response("200 OK", [("Content-Length", str(len(body)))])
        return [body]

    srv = make_server(app, listen("127.0.0.1", 0), threads=2)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield srv.effective_port, bodies
    srv.close()
    thread.join(5)


def test_bodies_of_every_size_arrive_whole_on_one_keep_alive_connection(server):
    port, bodies = server
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    for size in [*SIZES, *reversed(SIZES)]:
        conn.request("GET", f"/{size}")
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, bodies[size])
    conn.close()


def test_a_client_leaving_mid_body_does_not_harm_the_next_one(server):
    port, bodies = server
    for _ in range(3):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET /3000000 HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sock.recv(1000).startswith(b"HTTP/1.1 200")
        sock.close()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    conn.request("GET", "/3000000")
    assert conn.getresponse().read() == bodies[3_000_000]
    conn.close()


def test_bytes_body_hands_out_what_is_left_without_copying():
    data = body_of(1000)
    buf = BytesBody(data)
    assert len(buf) == 1000 and bytes(buf.get(10)) == data
    buf.skip(400, True)
    chunk = buf.get()
    assert isinstance(chunk, memoryview) and chunk.obj is data and bytes(chunk) == data[400:]
    with pytest.raises(ValueError):
        buf.skip(601)
    buf.skip(600)
    assert len(buf) == 0
    buf.close()
    assert (len(buf), buf.get()) == (0, b"")
