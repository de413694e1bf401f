"""A production threaded WSGI server (waitress) for the Bottle app."""

from __future__ import annotations

import logging

from waitress.server import create_server

log = logging.getLogger("pbxcontrol.http")


def make_server(app, host: str, port: int, threads: int):
    """Bind now (so a busy port fails at start-up); serve with `.run()`, stop with `.close()`."""
    server = create_server(
        app, host=host, port=port, threads=threads, ident="pbxcontrol",
        # Limits the service enforces before any of our code runs.
        max_request_header_size=32 * 1024, max_request_body_size=1024 * 1024,
        channel_timeout=30, connection_limit=512, clear_untrusted_proxy_headers=True,
    )
    log.info("HTTP API listening on http://%s:%s/api/json/", host, server.effective_port)
    return server
