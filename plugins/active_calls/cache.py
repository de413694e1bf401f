"""Answers kept per (caller scope, parameters) for the newest data version (the core's, read
through `ctx.journal`; every change to legs, the customer tree, directory and lines bumps it):
polling an unchanged list costs one counter read, and nothing stale is ever served."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable

from pbxcontrol.plugin import Pieces

#: An answer as kept: its JSON, whole or in pieces (the kept order's blocks, shared with it).
Answer = bytes | Pieces


def _size(value: Answer) -> int:
    return len(value) if isinstance(value, bytes) else value.size


class ResponseCache:
    """A byte-bounded LRU of serialised answers of the newest data version only: an answer of
    an older version can never be asked for again, so a new version empties the cache (while
    calls come and go the version changes many times a second, and the cache would otherwise
    fill up with dead answers to its limit)."""

    def __init__(self, max_bytes: int = 16 * 1024 * 1024):
        self.max_bytes = max_bytes
        self._entries: OrderedDict[Hashable, Answer] = OrderedDict()
        self._version: int | None = None
        self._size = 0
        self._lock = threading.Lock()

    def get(self, version: int | None, key: Hashable) -> Answer | None:
        with self._lock:
            value = self._entries.get(key) if version == self._version else None
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, version: int | None, key: Hashable, value: Answer) -> None:
        if version is None:
            return
        size = _size(value)
        if size > self.max_bytes // 4:
            return  # one huge answer must not flush everything else
        with self._lock:
            if self._version is not None and version < self._version:
                return  # computed from data that has changed since
            if version != self._version:
                self._entries.clear()
                self._size = 0
                self._version = version
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= _size(old)
            self._entries[key] = value
            self._size += size
            while self._size > self.max_bytes:
                _, evicted = self._entries.popitem(last=False)
                self._size -= _size(evicted)
