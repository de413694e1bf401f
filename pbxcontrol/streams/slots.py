"""Live streams per person, counted across the API processes of one host.

A table in anonymous shared memory, made before the workers fork, so every process of one
`pbxcontrol serve`/`api` sees the same counts. Each host counts its own streams: with N API
hosts on one database a person may hold up to N x the limit.
"""

from __future__ import annotations

import hashlib
import mmap
import multiprocessing
import struct

_SLOT = struct.Struct("qq")  # (person key, open streams)


class PersonSlots:
    def __init__(self, limit: int, size: int = 8192) -> None:
        self.limit = limit
        self.size = size
        self._table = mmap.mmap(-1, size * _SLOT.size)
        self._lock = multiprocessing.Lock()

    def acquire(self, username: str) -> bool:
        """Take one of the person's streams; False when they already hold `limit`."""
        key = _key(username)
        with self._lock:
            at = self._find(key)
            if at is None:  # the table is full of other people: do not refuse anyone for it
                return True
            count = _SLOT.unpack_from(self._table, at)[1]
            if count >= self.limit:
                return False
            _SLOT.pack_into(self._table, at, key, count + 1)
            return True

    def release(self, username: str) -> None:
        key = _key(username)
        with self._lock:
            at = self._find(key)
            if at is not None:
                count = _SLOT.unpack_from(self._table, at)[1]
                _SLOT.pack_into(self._table, at, key, max(0, count - 1))

    def held(self, username: str) -> int:
        with self._lock:
            at = self._find(_key(username))
            return 0 if at is None else _SLOT.unpack_from(self._table, at)[1]

    def _find(self, key: int) -> int | None:
        """The offset of `key`'s slot (claiming a free one), or None when none is left."""
        start, free = key % self.size, None
        for probe in range(self.size):
            at = ((start + probe) % self.size) * _SLOT.size
            stored, count = _SLOT.unpack_from(self._table, at)
            if stored == key:
                return at
            if free is None and count == 0:  # never used, or a person with no stream now
                free = at
            if stored == 0:  # the end of the probe chain: `key` is not further on
                break
        if free is not None:
            _SLOT.pack_into(self._table, free, key, 0)
        return free


def _key(username: str) -> int:
    return (
        int.from_bytes(hashlib.blake2b(username.encode(), digest_size=8).digest(), "big") >> 1 or 1
    )
