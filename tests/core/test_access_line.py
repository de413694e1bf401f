"""The access line of an API request is written once its answer has been sent (the WSGI
server closes the body after its last byte: pbxcontrol.http.body.Sent), not before the first
byte leaves (issue 21: the log write was ~0.1 ms of a 2 ms answer); it still says the
server's time and never the query string. On both engines (the request runs auth and the
list on the database)."""

from __future__ import annotations

import logging
from wsgiref.util import setup_testing_defaults

import pytest

from tests.conftest import LIST
from tests.plugins.active_calls.stream_support import query


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def lines():
    handler = Lines()
    logger = logging.getLogger("pbxcontrol.access")
    logger.addHandler(handler)
    old = logger.level
    logger.setLevel(logging.INFO)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(old)


@pytest.mark.parametrize("params", [{"customer": "system"}, {"count": "1"}, {"customer": "x"}])
def test_the_access_line_is_written_after_the_last_byte_of_the_body(rt, lines, params):
    environ = {"PATH_INFO": LIST, "QUERY_STRING": query("admin", **params)}
    environ["REMOTE_ADDR"] = "192.0.2.7"
    setup_testing_defaults(environ)
    started: list[str] = []
    body = rt.app(environ, lambda status, headers, exc_info=None: started.append(status))
    sent = b"".join(body)  # every byte handed to the server
    assert started == ["200 OK"] and sent.startswith(b'{"responses"')
    assert lines == []  # not yet: the server has not closed the body
    body.close()  # what the server does once the last byte is written
    assert len(lines) == 1
    code = "400" if params.get("customer") == "x" else "200"
    assert lines[0].startswith(f"192.0.2.7 GET /api/json/calls/active/list/ {code} ")
    assert lines[0].endswith("ms") and "auth_password" not in lines[0]
