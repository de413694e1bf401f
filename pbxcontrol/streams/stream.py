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

from pbxcontrol.auth import tickets
from pbxcontrol.auth.authenticator import Caller
from pbxcontrol.auth.tokens import Claims
from pbxcontrol.db.journal import Entry, Follower
from pbxcontrol.db.outage import is_outage
from pbxcontrol.http import envelope, params
from pbxcontrol.http.api import ALLOW, JsonApi, check_privileges
from pbxcontrol.http.envelope import ApiError
from pbxcontrol.streams.slots import PersonSlots

log = logging.getLogger("pbxcontrol.http")
access_log = logging.getLogger("pbxcontrol.access")

PREFIX = "/api/stream/"
#: The parameters that are credentials.
CREDENTIALS = ("auth_username", "auth_password", "auth_token")
#: The credential kept (in memory) to re-check it: a token (its revocation, its expiry). A
#: password is not kept: re-checks compare the person's row with what it was checked against.
KEPT = ("auth_token",)
TICKET = "ticket"  # a one-use ticket from stream/ticket, instead of credentials
TICKET_AND = "give a ticket or credentials, not both"

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


@dataclass(frozen=True)
class OneSnapshot:
    """What an opener returns for a stream that is one snapshot and ends (the board at a past
    moment): sent whole from the worker thread, then the connection closes; the hub never
    holds it, nor does it take one of its person's stream slots."""

    ident: int  # the event's id
    data: bytes  # the `snapshot` event's data


#: (ApiRequest) -> StreamView or OneSnapshot, or raises ApiError
Opener = Callable[[Any], "StreamView | OneSnapshot"]


@dataclass
class Opened:
    """A stream that may start: who, what, from where it resumes."""

    path: str
    caller: Caller
    view: StreamView
    credentials: dict[str, str]  # KEPT: the token, if the stream was opened with one
    last_event_id: int | None
    started: float = field(default_factory=time.monotonic)
    #: Opened with a ticket: whom it was issued to, re-checked like a token (no password).
    grant: Claims | None = None


@dataclass
class StreamApi:
    """Opening the stream functions registered in `api` (its one path: parameters,
    authentication, privileges, the opener), each person's slots, and who follows the
    change journal in this process."""

    api: JsonApi
    slots: PersonSlots
    #: Called with the hub's connection and what it read, each time it read new journal
    #: entries (plugins' in-memory state kept current off the request path; Journal.follow).
    followers: list[Follower] = field(default_factory=list)

    def open(
        self,
        method: str,
        path: str,
        query: str,
        last_event_id: str,
        address: str,
        *,
        full: bool = False,
    ) -> Opened | OneSnapshot | bytes:
        """A stream ready to start (its person's slot taken), one snapshot to send, or the
        envelope to answer. `full`: this process holds as many streams as it may."""
        started = time.perf_counter()
        name = path[len(PREFIX) :].strip("/")
        answer: Opened | OneSnapshot | bytes
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
    ) -> Opened | OneSnapshot:
        if method != "GET":
            raise ApiError(405, [("", "Method not allowed; use GET.")])
        function = self.api.find(name, stream=True)
        values = params.parse(query)
        resume = last_event_id or values.pop("last_event_id", "")
        given = any(k in values for k in CREDENTIALS)
        credentials = {k: values[k] for k in KEPT if values.get(k)}  # auth removes them
        grant = caller = None
        if TICKET in values:
            grant, caller = self._use_ticket(values.pop(TICKET), given)
        caller, view = self.api.run(function, values, address, caller)
        if isinstance(view, OneSnapshot):
            return view
        if full:
            raise ApiError(429, [("", "Too many live streams on this server.")])
        if not self.slots.acquire(caller.username):
            raise ApiError(429, [("", "Too many live streams for this person.")])
        return Opened(name, caller, view, credentials, _event_id(resume), grant=grant)

    def _use_ticket(self, ticket: str, credentials: bool) -> tuple[Claims, Caller]:
        """The ticket used up (in a transaction of its own: any attempt uses it, whatever
        the opening then answers) and the person it was issued to, checked as a token is."""
        if credentials:
            raise ApiError.invalid(TICKET, TICKET_AND)
        with self.api.engine.begin() as conn:
            grant = tickets.consume(conn, ticket)
            if grant is None:
                raise ApiError(401, [("", tickets.USED)])
            return grant, self.api.authenticator.check_claims(conn, grant)

    def recheck(self, conn: Connection, opened: Opened) -> bool:
        """Whether the stream's person may still use it: enabled, the same password hash,
        token epoch, role and customer, the token valid, the privileges. Runs on the hub's
        thread, which delivers every stream's events: no KDF, and not a login (the throttle
        neither counts nor refuses it)."""
        if opened.caller.token_expires is not None and time.time() >= opened.caller.token_expires:
            return False
        # Opened with a ticket: its person, as a token's (the token it came from logged out).
        caller = self.api.authenticator.revalidate(
            conn, opened.caller, opened.credentials.get("auth_token"), opened.grant
        )
        if caller is None:
            return False
        try:
            check_privileges(self.api.find(opened.path, stream=True), caller)
        except ApiError:
            return False
        return True


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


def answer(version: str, body: OneSnapshot | bytes) -> bytes:
    """What is sent whole before the connection closes: one snapshot, or the envelope."""
    if isinstance(body, OneSnapshot):
        return head(version) + event(body.ident, "snapshot", body.data)
    return whole(version, body)


def whole(version: str, body: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    """An answer that is not a stream (the envelope), complete, then the connection closes.
    `headers`: more header lines, each ending in CRLF."""
    return (
        f"HTTP/{version} {status}\r\nContent-Type: application/json; charset=utf-8\r\n"
        f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        f"{headers}\r\n"
    ).encode() + body


def method_not_allowed(version: str, method: str) -> bytes:
    """HTTP 405 with `Allow` (SPEC §13): a method other than GET and POST opens nothing. The
    answer to HEAD has the headers of the envelope and not the envelope itself."""
    body = envelope.error(ApiError(405))
    answer = whole(version, body, "405 Method Not Allowed", f"Allow: {ALLOW}\r\n")
    return answer.removesuffix(body) if method == "HEAD" else answer
