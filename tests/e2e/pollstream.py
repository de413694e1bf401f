"""A stand-in for /api/stream/calls/active/list/ while the server has none: a proxy in front of
a real `pbxcontrol serve` that answers the stream (SPEC §8 events) by polling the list.

    .venv/bin/python -m tests.e2e.pollstream UPSTREAM_PORT [PORT]

Every other request is passed through. Development aid for the wallboard only: the stream's
contract is tested against the real one.
"""

from __future__ import annotations

import itertools
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, urlencode, urlsplit

import requests

STREAM = "/api/stream/calls/active/list/"
_ids = itertools.count(int(time.time() * 1000))


class Handler(BaseHTTPRequestHandler):
    upstream = ""

    def log_message(self, format, *args):  # quiet
        pass

    def do_GET(self):
        if urlsplit(self.path).path.rstrip("/") == STREAM.rstrip("/"):
            self.stream()
        else:
            self.proxy(b"")

    def do_POST(self):
        self.proxy(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def proxy(self, body: bytes) -> None:
        headers = {k: v for k, v in self.headers.items() if k.lower() in ("content-type",)}
        resp = requests.request(
            self.command,
            self.upstream + self.path,
            data=body or None,
            headers=headers,
            timeout=10,
            allow_redirects=False,
        )
        self.send_response(resp.status_code)
        for key, value in resp.headers.items():
            if key.lower() not in ("content-length", "transfer-encoding", "connection", "server"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(resp.content)))
        self.end_headers()
        self.wfile.write(resp.content)

    def list(self, params: list[tuple[str, str]]) -> dict:
        url = f"{self.upstream}/api/json/calls/active/list/?{urlencode(params)}"
        return requests.get(url, timeout=10).json()

    def stream(self) -> None:
        params = [(k, v) for k, v in parse_qsl(urlsplit(self.path).query) if k != "last_event_id"]
        body = self.list(params)
        if body["responses"][0]["code"] != "200":
            raw = json.dumps(body).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)
            return
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.end_headers()
        rows = {(r["machine"], r["uniqueid"]): r for r in body["data"]}
        self.send(f"retry: 2000\n\nid: {next(_ids)}\nevent: snapshot\ndata: {json.dumps(body)}\n\n")
        quiet = time.monotonic()
        while True:
            time.sleep(0.2)
            body = self.list(params)
            if body["responses"][0]["code"] != "200":
                return
            now = {(r["machine"], r["uniqueid"]): r for r in body["data"]}
            out = [
                f"id: {next(_ids)}\nevent: upsert\ndata: {json.dumps(row)}\n\n"
                for k, row in now.items()
                if rows.get(k) != row
            ]
            out += [
                f"id: {next(_ids)}\nevent: remove\ndata: "
                f"{json.dumps({'uniqueid': k[1], 'machine': k[0]})}\n\n"
                for k in rows.keys() - now.keys()
            ]
            if not out and time.monotonic() - quiet > 10:
                out = [": keepalive\n\n"]
            if out:
                quiet = time.monotonic()
                self.send("".join(out))
            rows = now

    def send(self, text: str) -> None:
        self.wfile.write(text.encode())
        self.wfile.flush()


def serve(upstream_port: int, port: int = 0) -> ThreadingHTTPServer:
    """Started on a thread; `.shutdown()` and `.server_close()` stop it."""
    handler = type("Bound", (Handler,), {"upstream": f"http://127.0.0.1:{upstream_port}"})
    server = ThreadingHTTPServer(("127.0.0.1", port), handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    srv = serve(int(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 0)
    print(f"http://127.0.0.1:{srv.server_address[1]}/wallboard/", flush=True)
    threading.Event().wait()
