"""The stream hub: one thread per API process that follows the change journal and writes
every live stream's events, so an open stream costs a socket and a few objects, not a thread.

Each round: read the journal's head (SQLite: every `poll` seconds; PostgreSQL: woken by
NOTIFY, and every second anyway), read the new entries once, and hand them to each *group*
— the streams with the same view key (caller scope + parameters) share one view, so one
query serves them all — then write the group's events to each of its streams with the
server's thread-safe `write_soon`. New streams join between rounds, at the hub's position:
a snapshot, or (resuming) the events they missed. Every few seconds: keepalives, and a
re-check of each stream's person (disabled, token revoked or expired: the stream ends).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from pbxcontrol.db import journal
from pbxcontrol.http.stream import Event, Opened, StreamApi, StreamView, event

log = logging.getLogger("pbxcontrol.http")

KEEPALIVE = 10.0  # seconds between comment lines (the contract: at most 15)
RECHECK = 30.0  # seconds between re-checks of each stream's person (the contract: 60)
BACKLOG = 4 * 1024 * 1024  # bytes a client may leave unread before its stream is ended
BATCH = 5000  # journal entries read per round at most


@dataclass(eq=False)
class Stream:
    channel: Any  # the server's channel: write_soon(), close_when_flushed, connected
    opened: Opened
    last_id: int = -1
    written: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Group:
    view: StreamView
    streams: set[Stream] = field(default_factory=set)
    snapshot: tuple[int, bytes] | None = None  # (id, data) computed at that id


class Hub:
    def __init__(self, engine: Engine, streams: StreamApi, poll: float = 0.1) -> None:
        self.engine = engine
        self.api = streams
        self.poll = poll if engine.dialect.name != "postgresql" else 1.0
        self.position = 0  # the last journal id every group has been brought to
        self.pruned = 0
        self.groups: dict[Any, Group] = {}
        self.by_channel: dict[Any, Stream] = {}
        self._joining: queue.SimpleQueue[Stream] = queue.SimpleQueue()
        self._leaving: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._trigger: Callable[[], None] = lambda: None
        self._next_keepalive = self._next_recheck = 0.0
        #: Told the number of open streams after each round (the metrics' gauge).
        self.counted: Callable[[int], None] = lambda count: None

    # -- called from other threads -----------------------------------------------------------
    def start(self, trigger: Callable[[], None]) -> None:
        """Run in this process (after any fork): `trigger` wakes the server's socket loop."""
        self._trigger = trigger
        with self.engine.connect() as conn:
            self.position, self.pruned = journal.head(conn)
        threading.Thread(target=self._run, name="stream hub", daemon=True).start()
        if self.engine.dialect.name == "postgresql":
            threading.Thread(target=self._listen, name="stream listen", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def join(self, channel: Any, opened: Opened) -> None:
        self._joining.put(Stream(channel, opened))
        self._wake.set()

    def leave(self, channel: Any) -> None:
        """The channel closed (the socket loop's thread)."""
        self._leaving.put(channel)
        self._wake.set()  # free the person's slot now, not at the next poll

    @property
    def count(self) -> int:
        return len(self.by_channel)

    # -- the hub's thread ------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.poll)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self._round()
                self.counted(self.count)
            except Exception:
                log.exception("stream hub: round failed; retrying")
                self._stop.wait(1.0)

    def _round(self) -> None:
        self._drop_left()
        with self.engine.connect() as conn:
            last, self.pruned = journal.head(conn)
            if last > self.position:
                upto = min(last, self.position + BATCH)
                self._advance(conn, journal.since(conn, self.position, upto), upto)
                self.position = upto
                if upto < last:
                    self._wake.set()
            self._join_waiting(conn)
            now = time.monotonic()
            if now >= self._next_recheck:
                self._next_recheck = now + RECHECK
                self._recheck(conn)
        if time.monotonic() >= self._next_keepalive:
            self._next_keepalive = time.monotonic() + KEEPALIVE
            self._keepalive()
        with contextlib.suppress(OSError):  # the server closed meanwhile (stopping)
            self._trigger()

    def _advance(self, conn: Connection, entries: list[journal.Entry], upto: int) -> None:
        reset = any(e.op == journal.RESET for e in entries)
        for key, group in list(self.groups.items()):
            if reset:
                if not group.view.still_valid(conn):
                    self._end_group(key, group)
                    continue
                data = group.view.snapshot(conn, replace=True)
                group.snapshot = (upto, data)
                self._send(group.streams, [(upto, "snapshot", data)])
            else:
                group.snapshot = None
                self._send(group.streams, group.view.changes(conn, entries))

    def _join_waiting(self, conn: Connection) -> None:
        waiting: list[Stream] = []
        while True:
            try:
                stream = self._joining.get_nowait()
            except queue.Empty:
                break
            resume = stream.opened.last_event_id
            if resume is not None and self.position < resume <= journal.head(conn)[0]:
                waiting.append(stream)  # this hub has not read that far yet: next round
                continue
            self._join(conn, stream)
        for stream in waiting:
            self._joining.put(stream)

    def _join(self, conn: Connection, stream: Stream) -> None:
        opened = stream.opened
        group = self.groups.get((opened.path, opened.view.key))
        if group is None:
            group = self.groups[(opened.path, opened.view.key)] = Group(opened.view)
            group.snapshot = (self.position, group.view.snapshot(conn, replace=True))
        group.streams.add(stream)
        self.by_channel[stream.channel] = stream
        if opened.caller.token_expires:  # end it on time, not at the next periodic check
            self._next_recheck = min(self._next_recheck, self._next_expiry())
        resume = opened.last_event_id
        if resume is not None and self.pruned <= resume <= self.position:
            missed = journal.since(conn, resume, self.position)
            if not any(e.op == journal.RESET for e in missed):
                stream.last_id = resume
                self._send([stream], group.view.catch_up(conn, missed))
                return
        if group.snapshot is None or group.snapshot[0] != self.position:
            group.snapshot = (self.position, group.view.snapshot(conn, replace=False))
        self._send([stream], [(self.position, "snapshot", group.snapshot[1])])

    def _send(self, streams: Any, events: list[Event]) -> None:
        if not events:
            return
        whole = b"".join(event(i, name, d) for i, name, d in events)
        for stream in list(streams):
            data = (
                whole
                if stream.last_id < events[0][0]
                else b"".join(event(i, name, d) for i, name, d in events if i > stream.last_id)
            )
            if data and self._write(stream, data):
                stream.last_id = max(i for i, _, _ in events)

    def _write(self, stream: Stream, data: bytes) -> bool:
        channel = stream.channel
        if channel.total_outbufs_len > BACKLOG:  # it does not read: end it, do not buffer more
            log.info("stream of %s ended: the client does not read", stream.opened.caller.username)
            self._end(stream)
            return False
        try:
            channel.write_soon(data)
        except Exception:  # ClientDisconnected: the socket loop tells us through leave()
            return False
        stream.written = time.monotonic()
        return True

    def _keepalive(self) -> None:
        idle = time.monotonic() - KEEPALIVE + 1.0
        for stream in list(self.by_channel.values()):
            if stream.written <= idle:
                self._write(stream, b": keepalive\n\n")

    def _recheck(self, conn: Connection) -> None:
        """End the streams whose person was disabled, whose token expired or was revoked, or
        whose view they may no longer see. One check per distinct credentials."""
        verdicts: dict[tuple, bool] = {}
        for stream in list(self.by_channel.values()):
            opened = stream.opened
            who = (opened.path, tuple(sorted(opened.credentials.items())))
            if who not in verdicts:
                verdicts[who] = self.api.recheck(conn, opened)
            if not verdicts[who] or (
                opened.caller.token_expires and time.time() >= opened.caller.token_expires
            ):
                self._end(stream)
        for key, group in list(self.groups.items()):
            if not group.view.still_valid(conn):
                self._end_group(key, group)
        self._next_recheck = min(self._next_recheck, self._next_expiry())

    def _next_expiry(self) -> float:
        """When the first token of a stream expires (monotonic), so its stream ends on time."""
        expiries = [
            s.opened.caller.token_expires
            for s in self.by_channel.values()
            if s.opened.caller.token_expires
        ]
        if not expiries:
            return float("inf")
        return time.monotonic() + max(0.0, min(expiries) - time.time()) + 0.05

    def _end_group(self, key: Any, group: Group) -> None:
        for stream in list(group.streams):
            self._end(stream)
        self.groups.pop(key, None)

    def _end(self, stream: Stream) -> None:
        """Close the stream once what was written has gone out; leave() then forgets it."""
        stream.channel.close_when_flushed = True
        self._forget(stream.channel)

    def _drop_left(self) -> None:
        while True:
            try:
                channel = self._leaving.get_nowait()
            except queue.Empty:
                return
            self._forget(channel)

    def _forget(self, channel: Any) -> None:
        stream = self.by_channel.pop(channel, None)
        if stream is None:
            return
        self.api.slots.release(stream.opened.caller.username)
        opened = stream.opened
        key = (opened.path, opened.view.key)
        group = self.groups.get(key)
        if group is not None:
            group.streams.discard(stream)
            if not group.streams:
                del self.groups[key]

    def _listen(self) -> None:
        """PostgreSQL: wake the hub on every NOTIFY of a commit with journal entries."""
        while not self._stop.is_set():
            try:
                raw = self.engine.raw_connection()
                try:
                    pg: Any = raw.driver_connection
                    pg.autocommit = True
                    pg.execute(f"LISTEN {journal.CHANNEL}")
                    while not self._stop.is_set():
                        for _ in pg.notifies(timeout=1.0, stop_after=1):
                            self._wake.set()
                finally:
                    raw.invalidate()
            except Exception as exc:
                log.warning("stream hub: LISTEN failed (%s); polling until it is back", exc)
                self._stop.wait(2.0)
