"""A TCP proxy on 127.0.0.1 between pbxcontrol and ARI whose connections a test can cut."""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class CuttableProxy:
    """Forwards 127.0.0.1:<port> to `target`. `cut()` drops every connection; while
    `blocked`, new connections are accepted and closed at once (ARI "unreachable"); while
    `frozen`, nothing is forwarded but every connection stays open and new ones are accepted,
    as with a server frozen by SIGSTOP or a host whose kernel still acknowledges."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 8088)) -> None:
        self.target = target
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.blocked = threading.Event()
        self.frozen = threading.Event()
        self.lock = threading.Lock()
        self.conns: list[socket.socket] = []
        self.accepted = 0
        self.closing = False
        self.thread = threading.Thread(target=self._accept, name="ari-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/ari"

    def _accept(self) -> None:
        while not self.closing:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.blocked.is_set():
                client.close()
                continue
            while self.frozen.is_set() and not self.closing:
                time.sleep(0.05)  # accepted (the kernel's backlog), never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self.lock:
                self.accepted += 1
                self.conns += [client, upstream]
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(src, dst), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                while self.frozen.is_set() and not self.closing:
                    time.sleep(0.05)
                data = src.recv(65536)
                if not data:
                    break
                while self.frozen.is_set() and not self.closing:
                    time.sleep(0.05)  # read while thawed, held back once frozen
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (src, dst):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            conns, self.conns = self.conns, []
        for sock in conns:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def close(self) -> None:
        self.closing = True
        self.blocked.set()
        self.listener.close()
        self.cut()
        self.thread.join(2)
