"""The stream hub: one thread per API process that owns every live stream's socket, follows
the change journal and writes the events, so an open stream costs a socket and a few objects
— not a thread, nor a waitress channel in its socket loop.

The thread sleeps in one epoll set (pbxcontrol.streams.outlet) of the streams' sockets and a
wake-up pipe. Each round: read the journal's head (every `poll` seconds, at once after a commit
of a writer in this process, and on PostgreSQL soon again while the head waits for writers in
flight: pbxcontrol/db/horizon.py; recorders do not NOTIFY, whose commits PostgreSQL
serialises) — but never sooner after a round than that round took: a busy hub takes fewer,
larger rounds —, read the new entries once, let the journal's followers (the list's in-memory
legs) take them, and hand them to each
*group* — the streams with the same view key (caller scope + parameters) share one view, so
one query serves them all — then queue the group's events, encoded once, on each of its
streams (the same bytes object, not a copy per stream) and send them at once without
blocking; what a socket does not take goes out when it is writable. New streams join between
rounds, at the hub's position: a snapshot (encoded once per group and position), or
(resuming) the events they missed; a join that fails (the database) closes that stream and
frees its person's slot. Per stream, a keepalive once it has had nothing for KEEPALIVE
seconds (not on a global tick: the streams are kept in the order they were last written).
Every few seconds, a re-check of each stream's person (disabled, token revoked or expired:
the stream ends). With a `watch` (pbxcontrol.db.unrecorded), the hub also looks at the
machines' leases and flags or ends the legs of a machine nobody records (SPEC §12).
"""

from __future__ import annotations

import logging
import queue
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Engine

from pbxcontrol.db import journal
from pbxcontrol.db.commits import CommitSignal
from pbxcontrol.db.engine import KeptReader
from pbxcontrol.db.outage import describe, is_outage
from pbxcontrol.db.unrecorded import Watch
from pbxcontrol.http.api import _release_memory
from pbxcontrol.liveness import Pulse
from pbxcontrol.streams.notices import Notices
from pbxcontrol.streams.outlet import BACKLOG, Fanout, Outlet, Stream
from pbxcontrol.streams.stream import Opened, StreamApi, StreamView, event

log = logging.getLogger("pbxcontrol.http")

KEEPALIVE = 10.0  # seconds without a byte before a stream gets a comment line (contract: 15)
RECHECK = 30.0  # seconds between re-checks of each stream's person (the contract: 60)
BATCH = 5000  # journal entries read per round at most
#: PostgreSQL: seconds between rounds, and while the head settles (writers in flight).
PG_POLL, PG_SETTLE = 0.05, 0.01
#: The GIL's switch interval in a process with a hub (Python's: 5 ms): the most a thread waits
#: for it while another runs, each time it takes it back after I/O.
SWITCH_INTERVAL = 0.001
TRIM_EVERY = 1.0  # seconds between malloc_trim calls while streams open
#: After a round of t seconds the next waits REST * (t - REST_FREE), at most MAX_REST s.
REST, MAX_REST, REST_FREE = 0.5, 0.25, 0.005
#: Open streams one process holds at most (they are not in waitress's connection_limit).
STREAMS_PER_PROCESS = 4096


@dataclass(eq=False)
class Group:
    view: StreamView
    streams: set[Stream] = field(default_factory=set)
    snapshot: tuple[int, bytes] | None = None  # (id, the encoded `snapshot` event at that id)


def rest_after(seconds: float) -> float:
    """The rest after a round of `seconds` (none when behind): a busy hub takes fewer, larger
    rounds (one costs about the same for a change as for hundreds), a quick one none."""
    return min(max(REST * (seconds - REST_FREE), 0.0), MAX_REST)


class Hub:
    def __init__(
        self,
        engine: Engine,
        streams: StreamApi,
        *,
        counted: Callable[[int], None] | None = None,
        commits: CommitSignal | None = None,
        poll: float = 0.1,
        watch: Watch | None = None,
        stream_buffer: int = BACKLOG,
    ) -> None:
        """`counted` is told the number of open streams after each round (the metrics'
        gauge); `commits`, the writers of this process, wake the hub after each commit;
        `watch` looks at the machines' leases; a stream is ended once more than
        `stream_buffer` bytes wait for its client (`[http] stream_buffer`)."""
        self.engine = engine
        self.api = streams
        self.poll = poll if engine.dialect.name != "postgresql" else PG_POLL
        self.position = 0  # the last journal id every group has been brought to
        #: The first round reads the head (the database may not answer when the hub starts).
        self.placed = False
        self.failing = False  # the database did not answer the last round
        self.pruned = 0
        self.groups: dict[Any, Group] = {}
        self.fanout = Fanout(self._forget, stream_buffer)
        self.watch = watch
        self._watch_due = 0.0  # monotonic: the next look at the leases
        self._watch_failing = False
        self._quiet_due = 0.0  # monotonic: the first stream due for a keepalive
        self._joining: queue.SimpleQueue[tuple[socket.socket, Opened, bytes]]
        self._joining = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.pulse = Pulse()  # the thread's: waiting in its poll, or working (the watchdog)
        self._reader = KeptReader(engine)  # the rounds' connection
        self._behind = False  # the last round left entries for the next (BATCH)
        # The intervals are read each round (a test may shorten them on a running hub).
        self._last_recheck = -RECHECK
        self._next_recheck = float("inf")  # sooner: a token that expires
        self._trim_due, self._next_trim = False, 0.0
        self.counted: Callable[[int], None] = counted or (lambda count: None)
        if commits is not None:
            commits.subscribe(self.changed)

    # -- called from other threads -----------------------------------------------------------
    def start(self) -> None:
        """Run in this process (after any fork)."""
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._thread = threading.Thread(target=self._run, name="stream hub", daemon=True)
        self._thread.start()
        if self.engine.dialect.name == "postgresql":
            Notices(self.engine, self.fanout.poller.wake, self._stop).start()

    def changed(self) -> None:
        """A writer in this process committed journal entries: read them now, not at the next
        poll (`serve`: the recorder's commits reach streams and followers at once)."""
        self.fanout.poller.wake()

    def stop(self) -> None:
        """End the hub's thread; it closes every stream's socket."""
        self._stop.set()
        self.fanout.poller.wake()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5)

    def join(self, sock: socket.socket, opened: Opened, head: bytes) -> None:
        """Take over an opened stream's socket: `head` (headers, `retry:`) goes out first."""
        self._joining.put((sock, opened, head))
        self.fanout.poller.wake()

    def alive(self, bound: float) -> bool:
        """For the watchdog: the hub's thread runs and its loop turns — no round of it works
        for `bound` seconds or more."""
        return self._stop.is_set() or not self.pulse.stuck(bound)

    @property
    def count(self) -> int:
        return len(self.fanout.streams)

    @property
    def full(self) -> bool:
        """Whether this process holds as many streams as it may."""
        return self.count >= STREAMS_PER_PROCESS

    # -- the hub's thread ------------------------------------------------------------------
    def _run(self) -> None:
        due = rested = 0.0  # monotonic: the next round at the latest; at the soonest
        wanted = False  # woken: a round as soon as the hub has rested
        self.pulse.attach()
        try:
            while not self._stop.is_set():
                soonest = min(due, max(rested, 0.0) if wanted else due, self._quiet_due)
                if self.watch is not None:
                    soonest = min(soonest, self._watch_due)
                with self.pulse.waiting():
                    woken, ready = self.fanout.poller.wait(soonest - time.monotonic())
                if self._stop.is_set():
                    return
                for stream, events in ready:
                    self.fanout.ready(stream, events)
                wanted = wanted or woken
                began = time.monotonic()
                if (wanted and began >= rested) or began >= due:
                    wanted, settling = False, self._guarded_round()
                    ended = time.monotonic()
                    rested = ended + (0.0 if self._behind else rest_after(ended - began))
                    due = max(ended + (PG_SETTLE if settling else self.poll), rested)
                    self.counted(self.count)
                if self.watch is not None and time.monotonic() >= self._watch_due:
                    self._look()
                # Whatever became of the round (a database that fails): no stream goes
                # KEEPALIVE seconds without a byte.
                if time.monotonic() >= self._quiet_due:
                    self._quiet_due = self.fanout.keepalive(KEEPALIVE)
        finally:
            for stream in [*self.fanout.streams.values(), *self.fanout.closing.values()]:
                self.fanout.close(stream)
            self.fanout.poller.close()
            self._reader.close()

    def _guarded_round(self) -> bool:
        """A round (True: the head settles); while the database does not answer, one line
        when it stops and one when it is back (no traceback a second), the streams kept."""
        try:
            settling = self._round()
        except Exception as exc:
            if not is_outage(exc):
                log.exception("stream hub: round failed; retrying")
            elif not self.failing:
                log.warning("stream hub: the database does not answer (%s)", describe(exc))
            self.failing = True
            self.pulse.wait(self._stop, 1.0)
            return False
        if self.failing:
            self.failing = False
            log.info("stream hub: the database answers again at journal id %s", self.position)
        return settling

    def _round(self) -> bool:
        """One round; True when the journal's head waits for writers in flight."""
        with self._reader.round() as conn:
            now = journal.position(conn)
            last, self.pruned = now.head, now.pruned
            settling = journal.settling(conn)
            if not self.placed or last < self.position:
                self._rewound(conn, last)
            elif last > self.position:
                # By entries, not ids: ids have gaps (a failover's: pbxcontrol.db.failover).
                entries = journal.since(conn, self.position, last, limit=BATCH)
                upto = entries[-1].id if len(entries) == BATCH else last
                # The followers first: a stream view may answer its changes from a
                # follower's state (the list's in-memory legs) once it is that new. They
                # get what was read (all of it, or None: only part was).
                whole = upto == last
                self._follow(conn, journal.Batch(self.position, now, entries) if whole else None)
                self._advance(conn, entries, upto)
                self.position, self._behind = upto, upto < last
                if self._behind:
                    self.fanout.poller.wake()
            self._join_waiting(conn)
            now_t = time.monotonic()
            if self._trim_due and now_t >= self._next_trim:
                # Opening streams checks passwords (argon2: 19 MiB each, on several worker
                # threads at once) and builds snapshots: give the freed heap back.
                self._trim_due, self._next_trim = False, now_t + TRIM_EVERY
                _release_memory()
            if now_t >= min(self._next_recheck, self._last_recheck + RECHECK):
                self._last_recheck, self._next_recheck = now_t, float("inf")
                self._recheck(conn)
        return settling

    def _rewound(self, conn: Connection, last: int) -> None:
        """The first round (position unknown), or the journal's head went back (a database
        restored from a backup): every group starts afresh at the head."""
        if self.placed:
            log.warning("stream hub: the journal went back (%d -> %d)", self.position, last)
            self._advance(conn, [journal.Entry(last, 0, "", journal.RESET, None, None)], last)
        self.position, self.placed = last, True

    def _look(self) -> None:
        """The watch's look at the machines' leases; what it wrote (legs flagged or ended,
        with their journal entries) goes to the streams in the next round, at once."""
        assert self.watch is not None
        try:
            wait, wrote = self.watch.check(self.engine)
        except Exception as exc:
            if not self._watch_failing:  # once per outage, not every second
                log.warning("stream hub: cannot look at the machines' leases: %s", exc)
            self._watch_failing, wait, wrote = True, 1.0, False
        else:
            self._watch_failing = False
        self._watch_due = time.monotonic() + wait
        if wrote:
            self.fanout.poller.wake()

    def _follow(self, conn: Connection, batch: journal.Batch | None) -> None:
        for follower in self.api.followers:
            try:
                follower(conn, batch)
            except Exception:  # a plugin's state; the streams go on
                log.exception("stream hub: a journal follower failed")

    def _advance(self, conn: Connection, entries: list[journal.Entry], upto: int) -> None:
        reset = any(e.op == journal.RESET for e in entries)
        for key, group in list(self.groups.items()):
            if reset:
                if not group.view.still_valid(conn):
                    self._end_group(key, group)
                    continue
                data = event(upto, "snapshot", group.view.snapshot(conn, replace=True))
                group.snapshot = (upto, data)
                self.fanout.fan(group.streams, [(upto, "snapshot", b"")], data)
            else:
                group.snapshot = None
                self.fanout.send(group.streams, group.view.changes(conn, entries))

    def _join_waiting(self, conn: Connection) -> None:
        waiting: list[tuple[socket.socket, Opened, bytes]] = []
        while True:
            try:
                joining = self._joining.get_nowait()
            except queue.Empty:
                break
            resume = joining[1].last_event_id
            if resume is not None and self.position < resume <= journal.head(conn)[0]:
                waiting.append(joining)  # this hub has not read that far yet: next round
                continue
            self._join(conn, *joining)
            self._trim_due = True
        for joining in waiting:
            self._joining.put(joining)

    def _join(self, conn: Connection, sock: socket.socket, opened: Opened, head: bytes) -> None:
        """Take the stream in: a snapshot, or what it missed. If that fails (the database
        went away), the stream is closed and its person's slot freed: the client reconnects."""
        stream = Stream(Outlet(sock), opened)
        self.fanout.poller.add(stream.outlet, stream)
        self.fanout.streams[stream.outlet.fd] = stream  # from here, closing it forgets it all
        self._quiet_due = min(self._quiet_due, stream.written + KEEPALIVE)
        try:
            self._start(conn, stream, head)
        except Exception as exc:
            log.warning("stream of %s closed: it could not start (%s)", opened.caller.username, exc)
            self.fanout.close(stream)

    def _start(self, conn: Connection, stream: Stream, head: bytes) -> None:
        opened = stream.opened
        stream.outlet.push(head)
        key = (opened.path, opened.view.key)
        group = self.groups.get(key)
        if group is None:
            group = Group(opened.view)
            data = group.view.snapshot(conn, replace=True)
            group.snapshot = (self.position, event(self.position, "snapshot", data))
            self.groups[key] = group
        opened.view = group.view  # the stream's own (its statements) is not kept
        group.streams.add(stream)
        if opened.caller.token_expires:  # end it on time, not at the next periodic check
            self._next_recheck = min(self._next_recheck, self._next_expiry())
        resume = opened.last_event_id
        if resume is not None and self.pruned <= resume <= self.position:
            missed = journal.since(conn, resume, self.position)
            if not any(e.op == journal.RESET for e in missed):
                stream.last_id = resume
                self.fanout.send([stream], group.view.catch_up(conn, missed))
                self.fanout.flush(stream)  # the head, when nothing was missed
                return
        if group.snapshot is None or group.snapshot[0] != self.position:
            data = group.view.snapshot(conn, replace=False)
            group.snapshot = (self.position, event(self.position, "snapshot", data))
        self.fanout.fan([stream], [(self.position, "snapshot", b"")], group.snapshot[1])

    def _recheck(self, conn: Connection) -> None:
        """End the streams whose person was disabled, whose token expired or was revoked, or
        whose view they may no longer see. One check per distinct person and credentials."""
        verdicts: dict[tuple, bool] = {}
        for stream in list(self.fanout.streams.values()):
            opened = stream.opened
            caller, token = opened.caller, opened.credentials.get("auth_token", "")
            # What revalidate compares, and the token or ticket.
            who: tuple = (opened.path, caller.username, caller.role, caller.customer_id)
            who += (caller.state, token, opened.grant)
            if who not in verdicts:
                verdicts[who] = self.api.recheck(conn, opened)
            if not verdicts[who] or (
                opened.caller.token_expires and time.time() >= opened.caller.token_expires
            ):
                self.fanout.end(stream)
        for key, group in list(self.groups.items()):
            if not group.view.still_valid(conn):
                self._end_group(key, group)
        self._next_recheck = min(self._next_recheck, self._next_expiry())

    def _next_expiry(self) -> float:
        """When the first token of a stream expires (monotonic), so its stream ends on time."""
        expiries = [
            s.opened.caller.token_expires
            for s in self.fanout.streams.values()
            if s.opened.caller.token_expires
        ]
        if not expiries:
            return float("inf")
        return time.monotonic() + max(0.0, min(expiries) - time.time()) + 0.05

    def _end_group(self, key: Any, group: Group) -> None:
        for stream in list(group.streams):
            self.fanout.end(stream)
        self.groups.pop(key, None)

    def _forget(self, stream: Stream) -> None:
        """(The fan-out's, once per stream.) No more events for it: out of its group, its
        person's slot freed."""
        opened = stream.opened
        self.api.slots.release(opened.caller.username)
        key = (opened.path, opened.view.key)
        group = self.groups.get(key)
        if group is not None:
            group.streams.discard(stream)
            if not group.streams:
                del self.groups[key]
