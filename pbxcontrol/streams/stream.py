"""Live streams under /api/stream/<path>/ (Server-Sent Events): opening one on a worker thread.

Opening runs what a JSON request runs — parameters, authentication, the privilege check and
the plugin's opener (its validation and scope), on one connection — and answers errors as
the JSON envelope. A stream that opens gets its headers and `retry:` here; from then on the
hub (pbxcontrol.streams.hub) owns it, and no thread waits on it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import Connection

from pbxcontrol.auth.authenticator import Caller
from pbxcontrol.db.journal import Entry
from pbxcontrol.db.outage import is_outage
from pbxcontrol.http import envelope, params
from pbxcontrol.http.api import JsonApi
from pbxcontrol.http.envelope import ApiError
from pbxcontrol.streams.slots import PersonSlots

log = logging.getLogger("pbxcontrol.http")
access_log = logging.getLogger("pbxcontrol.access")

PREFIX = "/api/stream/"
#: Parameters that are the caller's credentials: kept (in memory) to re-check them.
CREDENTIALS = ("auth_username", "auth_password", "auth_token")

Event = tuple[int, str, bytes]  # (id, event name, data)


class StreamView(Protocol):
    """What a plugin's stream opener returns: one view of the data for one (caller scope,
    parameters). Views with the same `key` share one instance (a group) in the hub, so one
    query serves all their streams. Every method gets a connection the hub owns."""

    key: Hashable

    def snapshot(self, conn: Connection, replace: bool) -> bytes:
        """The `snapshot` event's data now; `replace`: every stream of the group gets it."""

    def changes(self, conn: Connection, entries: list[Entry]) -> list[Event]:
        """Events for journal entries (none a reset), ids increasing, for the whole group."""

    def catch_up(self, conn: Connection, entries: list[Entry]) -> list[Event]:
        """Events for one stream resuming before `entries`, which it missed."""

    def still_valid(self, conn: Connection) -> bool:
        """Whether the caller may still see this view (its scope may have moved)."""


Opener = Callable[[Any], StreamView]  # (ApiRequest) -> StreamView, or raises ApiError


@dataclass
class Opened:
    """A stream that may start: who, what, from where it resumes."""

    path: str
    caller: Caller
    view: StreamView
    credentials: dict[str, str]
    last_event_id: int | None
    started: float = field(default_factory=time.monotonic)


@dataclass
class StreamApi:
    """Opening the stream functions registered in `api` (its one path: parameters,
    authentication, privileges, the opener), each person's slots, and who follows the
    change journal in this process."""

    api: JsonApi
    slots: PersonSlots
    #: Called with the hub's connection each time the hub read new journal entries (plugins'
    #: in-memory state kept current off the request path; Journal.follow).
    followers: list[Callable[[Connection], None]] = field(default_factory=list)

    def open(
        self,
        method: str,
        path: str,
        query: str,
        last_event_id: str,
        address: str,
        *,
        full: bool = False,
    ) -> Opened | bytes:
        """A stream ready to start (its person's slot taken), or the envelope to answer.
        `full`: this process holds as many streams as it may."""
        started = time.perf_counter()
        name = path[len(PREFIX) :].strip("/")
        answer: Opened | bytes
        try:
            answer = self._open(method, name, query, last_event_id, address, full)
            code = 200
        except ApiError as err:
            code, answer = err.code, envelope.error(err)
        except Exception as exc:
            if is_outage(exc):
                self.api.outages.seen(exc)
                code, answer = 503, envelope.error(envelope.unreachable())
            else:
                log.exception("unexpected error opening stream %s", name)
                code, answer = 500, envelope.error(ApiError(500))
        access_log.info(
            "%s /api/stream/%s %s %.1fms", method, name, code, (time.perf_counter() - started) * 1e3
        )
        return answer

    def _open(
        self, method: str, name: str, query: str, last_event_id: str, address: str, full: bool
    ) -> Opened:
        if method != "GET":
            raise ApiError(405, [("", "Method not allowed; use GET.")])
        function = self.api.find(name, stream=True)
        values = params.parse(query)
        resume = last_event_id or values.pop("last_event_id", "")
        credentials = {k: values[k] for k in CREDENTIALS if k in values}  # auth removes them
        caller, view = self.api.run(function, values, address, None)
        if full:
            raise ApiError(429, [("", "Too many live streams on this server.")])
        if not self.slots.acquire(caller.username):
            raise ApiError(429, [("", "Too many live streams for this person.")])
        return Opened(name, caller, view, credentials, _event_id(resume))

    def recheck(self, conn: Connection, opened: Opened) -> bool:
        """Whether the stream's person may still use it: credentials, privileges, token."""
        if opened.caller.token_expires is not None and time.time() >= opened.caller.token_expires:
            return False
        try:
            function = self.api.find(opened.path, stream=True)
            caller = self.api.authorize(conn, function, dict(opened.credentials), "")
        except ApiError:
            return False
        return caller.customer_id == opened.caller.customer_id


def _event_id(raw: str) -> int | None:
    raw = raw.strip()
    # isascii: str.isdigit() is also true of '²' or '٣', which int() refuses (a 500).
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def event(ident: int, name: str, data: bytes) -> bytes:
    return b"id: %d\nevent: %s\ndata: %s\n\n" % (ident, name.encode(), data)


def head(version: str) -> bytes:
    """The response's start: headers, then the reconnection delay."""
    return (
        f"HTTP/{version} 200 OK\r\nContent-Type: text/event-stream\r\n"
        "Cache-Control: no-cache\r\nConnection: close\r\nX-Accel-Buffering: no\r\n\r\n"
        "retry: 2000\n\n"
    ).encode()


def whole(version: str, body: bytes) -> bytes:
    """An answer that is not a stream (the envelope), complete, then the connection closes."""
    return (
        f"HTTP/{version} 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body
