"""Live streams per person, counted across the API processes of one host.

Two tables in shared memory, made before the workers fork, so every process of one
`pbxcontrol serve`/`api` sees the same counts: per person, the streams open (what the limit
is checked against), and per (person, process), how many of them that process holds. A
worker that dies (killed, crashed) cannot release its streams' slots itself: the supervisor,
which reaps it, calls `release_process` with its pid, and what it held is taken off the
persons' counts. Each host counts its own streams: with N API hosts on one database a person
may hold up to N x the limit.

The lock: a POSIX record lock (fcntl) on the memory's file, which the kernel drops when the
process holding it dies, so a worker killed in the middle of an update cannot block the others
for ever; record locks belong to a process, not a thread, so a thread lock comes first.
"""

from __future__ import annotations

import fcntl
import hashlib
import mmap
import os
import struct
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager

_PERSON = struct.Struct("qq")  # (person key, open streams)
_HELD = struct.Struct("qqqq")  # (slot key, person key, pid, streams that process holds)


class PersonSlots:
    def __init__(self, limit: int, size: int = 8192) -> None:
        self.limit = limit
        self.size = size
        self._held_size = 2 * size
        self._held_at = size * _PERSON.size  # the second table, after the first
        length = self._held_at + self._held_size * _HELD.size
        self._fd = os.memfd_create("pbxcontrol-stream-slots", os.MFD_CLOEXEC)
        weakref.finalize(self, os.close, self._fd)
        os.ftruncate(self._fd, length)
        self._table = mmap.mmap(self._fd, length)  # MAP_SHARED: one table after fork
        self._threads = threading.Lock()
        self._pid = os.getpid()

    def acquire(self, username: str) -> bool:
        """Take one of the person's streams for this process; False when they already hold
        `limit` (in every process of the host)."""
        key = _key(username)
        with self._locked():
            at = self._find_person(key)
            if at is None:  # the table is full of other people: do not refuse anyone for it
                return True
            count = _PERSON.unpack_from(self._table, at)[1]
            if count >= self.limit:
                return False
            if self._add_held(key, os.getpid(), 1):  # else full too: not counted, as above
                _PERSON.pack_into(self._table, at, key, count + 1)
            return True

    def release(self, username: str) -> None:
        """This process's stream of the person ended."""
        key = _key(username)
        with self._locked():
            if self._add_held(key, os.getpid(), -1):
                self._add_person(key, -1)

    def release_process(self, pid: int) -> int:
        """Every slot process `pid` held (it died): taken off its persons' counts. How many."""
        freed = 0
        with self._locked():
            for n in range(self._held_size):
                at = self._held_at + n * _HELD.size
                slot, person, holder, count = _HELD.unpack_from(self._table, at)
                if holder == pid and count > 0:
                    _HELD.pack_into(self._table, at, slot, person, holder, 0)
                    self._add_person(person, -count)
                    freed += count
        return freed

    def held(self, username: str) -> int:
        with self._locked():
            at = self._find_person(_key(username))
            return 0 if at is None else _PERSON.unpack_from(self._table, at)[1]

    # -- the tables, under the lock ----------------------------------------------------------
    @contextmanager
    def _locked(self) -> Iterator[None]:
        if self._pid != os.getpid():  # a forked process: its own thread lock
            self._threads, self._pid = threading.Lock(), os.getpid()
        with self._threads:
            fcntl.lockf(self._fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(self._fd, fcntl.LOCK_UN)

    def _add_person(self, key: int, delta: int) -> None:
        at = self._find_person(key)
        if at is not None:
            count = _PERSON.unpack_from(self._table, at)[1]
            _PERSON.pack_into(self._table, at, key, max(0, count + delta))

    def _add_held(self, person: int, pid: int, delta: int) -> bool:
        """Change what `pid` holds of `person`'s streams; False when the table is full or a
        release finds none (the person's count then stays: that stream was never counted)."""
        slot = _key(f"{person}:{pid}")
        at = _find(self._table, self._held_at, self._held_size, _HELD, slot)
        if at is None:
            return False
        count = _HELD.unpack_from(self._table, at)[3]
        if count + delta < 0:
            return False
        _HELD.pack_into(self._table, at, slot, person, pid, count + delta)
        return True

    def _find_person(self, key: int) -> int | None:
        return _find(self._table, 0, self.size, _PERSON, key)


def _find(table: mmap.mmap, base: int, size: int, kind: struct.Struct, key: int) -> int | None:
    """The offset of `key`'s entry in the open-addressed table of `size` entries at `base`
    (claiming a free one), or None when none is left. An entry whose count is 0 is free to
    claim; an entry never used (key 0) ends a probe chain."""
    start, free = key % size, None
    for probe in range(size):
        at = base + ((start + probe) % size) * kind.size
        fields = kind.unpack_from(table, at)
        stored, count = fields[0], fields[-1]
        if stored == key:
            return at
        if free is None and count == 0:  # never used, or nobody's streams now
            free = at
        if stored == 0:  # the end of the probe chain: `key` is not further on
            break
    if free is not None:
        kind.pack_into(table, free, key, *([0] * (len(kind.format) - 1)))
    return free


def _key(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big") >> 1 or 1
