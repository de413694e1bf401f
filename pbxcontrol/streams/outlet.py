"""Live streams' sockets, owned by the hub's thread (pbxcontrol.streams.hub) once opened.

An `Outlet` queues references to the bytes it must send — the same object for every stream
of a group, never a per-stream copy — and sends them without blocking (several queued events
in one `sendmsg`); what the socket does not take waits for its write-readiness. The `Poller`
is the one epoll set of every stream of the process plus a wake-up pipe: the hub sleeps in
it, so a stream costs no waitress channel and no pass of waitress's socket loop (which
rebuilds its poll set from every channel on each pass). `Fanout`: the hub's writing of
events to its streams, ending them (at once, or once flushed), keepalives.
"""

from __future__ import annotations

import contextlib
import logging
import os
import selectors
import socket
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from itertools import islice
from typing import Any

from pbxcontrol.streams.stream import Event, Opened, event

log = logging.getLogger("pbxcontrol.http")

MAX_BUFFERS = 64  # queued events given to one sendmsg
#: Bytes a client may leave unread before its stream is ended (`[http] stream_buffer`).
BACKLOG = 4 * 1024 * 1024
LINGER = 10.0  # seconds an ended stream has to send what was queued before it is closed
KEEPALIVE_LINE = b": keepalive\n\n"


class Outlet:
    __slots__ = ("sock", "fd", "queue", "offset", "pending", "polled_out")

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(False)
        self.sock = sock
        self.fd = sock.fileno()
        self.queue: deque[bytes] = deque()
        self.offset = 0  # bytes of queue[0] already sent
        self.pending = 0  # bytes queued and not sent
        self.polled_out = False  # registered for write-readiness

    def push(self, data: bytes) -> None:
        if data:
            self.queue.append(data)
            self.pending += len(data)

    def flush(self) -> bool:
        """Send what the socket takes now; True when nothing is left. OSError: it is gone."""
        queue = self.queue
        while queue:
            first = queue[0] if not self.offset else memoryview(queue[0])[self.offset :]
            try:
                if len(queue) == 1:
                    sent = self.sock.send(first)
                else:
                    sent = self.sock.sendmsg([first, *islice(queue, 1, MAX_BUFFERS)])
            except (BlockingIOError, InterruptedError):
                return False
            if not sent:
                return False
            self._sent(sent)
        return True

    def _sent(self, sent: int) -> None:
        self.pending -= sent
        queue = self.queue
        while sent:
            left = len(queue[0]) - self.offset
            if sent < left:
                self.offset += sent
                return
            sent -= left
            queue.popleft()
            self.offset = 0

    def drain(self) -> bool:
        """Read (and drop) what the client sent; False when it closed the connection."""
        try:
            return bool(self.sock.recv(4096))
        except (BlockingIOError, InterruptedError):
            return True
        except OSError:
            return False


class Poller:
    """The hub's epoll set: every stream's socket (readable: the client went away or sent
    something; writable: only while its queue waits) and a pipe that wakes the hub."""

    def __init__(self) -> None:
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)

    def wake(self) -> None:
        with contextlib.suppress(OSError):  # full (a wake-up is pending anyway) or closed
            os.write(self._wake_w, b"x")

    def add(self, outlet: Outlet, data: Any) -> None:
        self._selector.register(outlet.fd, selectors.EVENT_READ, data)

    def want_write(self, outlet: Outlet, data: Any, on: bool) -> None:
        if outlet.polled_out != on:
            events = selectors.EVENT_READ | (selectors.EVENT_WRITE if on else 0)
            self._selector.modify(outlet.fd, events, data)
            outlet.polled_out = on

    def remove(self, outlet: Outlet) -> None:
        with contextlib.suppress(KeyError, ValueError, OSError):
            self._selector.unregister(outlet.fd)
        with contextlib.suppress(OSError):
            outlet.sock.close()

    def wait(self, timeout: float) -> tuple[bool, list[tuple[Any, int]]]:
        """(whether woken, [(data, events)] of the streams' sockets that are ready)."""
        woken, ready = False, []
        for key, events in self._selector.select(max(0.0, timeout)):
            if key.data is None:
                woken = True
                with contextlib.suppress(OSError):
                    while os.read(self._wake_r, 4096):
                        pass
            else:
                ready.append((key.data, events))
        return woken, ready

    def close(self) -> None:
        self._selector.close()
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)


@dataclass(eq=False)
class Stream:
    outlet: Outlet  # its socket and what is queued for it
    opened: Opened
    last_id: int = -1
    written: float = field(default_factory=time.monotonic)
    closing: float = 0.0  # ended: closed once flushed, or at this (monotonic) time
    gone: bool = False  # its socket is closed


class Fanout:
    """The streams' sockets and the writing of events to them, on the hub's thread only.
    `forget(stream)` is the owner's (the hub's): what a stream that gets no more events
    leaves behind (its group, its person's slot)."""

    def __init__(self, forget: Callable[[Stream], None], buffer: int = BACKLOG) -> None:
        # By socket fd: the open streams, the one written longest ago first (keepalives).
        self.streams: OrderedDict[int, Stream] = OrderedDict()
        self.closing: dict[int, Stream] = {}  # ended, still sending what was queued
        self.poller = Poller()
        self.buffer = buffer  # bytes waiting for a client beyond which its stream ends
        self._forget_owner = forget

    def _forget(self, stream: Stream) -> None:
        """Out of the open streams (once); the owner forgets the rest."""
        if self.streams.get(stream.outlet.fd) is not stream:
            return
        del self.streams[stream.outlet.fd]
        self._forget_owner(stream)

    def ready(self, stream: Stream, events: int) -> None:
        if events & selectors.EVENT_READ and not stream.outlet.drain():
            self.close(stream)  # the client went away
            return
        if events & selectors.EVENT_WRITE:
            self.flush(stream)

    def send(self, streams: Iterable[Stream], events: list[Event]) -> None:
        if events:
            self.fan(streams, events, b"".join(event(i, name, d) for i, name, d in events))

    def fan(self, streams: Iterable[Stream], events: list[Event], whole: bytes) -> None:
        """Queue `whole` (the encoded `events`, ids increasing) on every stream and send it;
        a stream that already has some of them (it joined meanwhile) gets the others."""
        first, last = events[0][0], events[-1][0]
        for stream in list(streams):
            data = (
                whole
                if stream.last_id < first
                else b"".join(event(i, name, d) for i, name, d in events if i > stream.last_id)
            )
            if data and self.write(stream, data):
                stream.last_id = last

    def write(self, stream: Stream, data: bytes) -> bool:
        outlet = stream.outlet
        if outlet.pending > self.buffer:  # it does not read: end it, do not buffer more
            log.info(
                "stream of %s ended: %d bytes wait for a client that does not read",
                *(stream.opened.caller.username, outlet.pending),
            )
            self.close(stream)
            return False
        outlet.push(data)
        stream.written = time.monotonic()
        if self.streams.get(outlet.fd) is stream:
            self.streams.move_to_end(outlet.fd)
        return self.flush(stream)

    def flush(self, stream: Stream) -> bool:
        """Send what the socket takes; False when the stream is gone."""
        if stream.gone:
            return False
        try:
            done = stream.outlet.flush()
        except OSError:  # the client went away
            self.close(stream)
            return False
        if done and stream.closing:
            self.close(stream)
            return False
        self.poller.want_write(stream.outlet, stream, not done)
        return True

    def keepalive(self, every: float) -> float:
        """A comment line on each stream that got nothing for `every` seconds; close the
        ended streams whose time to flush is over. Returns when (monotonic) the next stream
        falls due: the streams are in the order they were last written, so this reads only
        the ones due and the one after."""
        now = time.monotonic()
        while self.streams:
            stream = next(iter(self.streams.values()))
            if stream.written > now - every:
                break
            self.write(stream, KEEPALIVE_LINE)  # moves it to the end, or closes it
        for stream in list(self.closing.values()):
            if stream.closing <= now:
                self.close(stream)
        first = next(iter(self.streams.values()), None)
        due = first.written + every if first is not None else float("inf")
        return min(due, now + 1.0) if self.closing else due

    def end(self, stream: Stream) -> None:
        """Close the stream once what was queued has gone out (or after LINGER seconds)."""
        self._forget(stream)
        if not stream.outlet.pending:
            self.close(stream)
        elif not stream.gone:
            stream.closing = time.monotonic() + LINGER
            self.closing[stream.outlet.fd] = stream

    def close(self, stream: Stream) -> None:
        if stream.gone:
            return
        self._forget(stream)
        self.closing.pop(stream.outlet.fd, None)
        stream.gone = True
        self.poller.remove(stream.outlet)
