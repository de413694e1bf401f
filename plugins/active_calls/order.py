"""Every live leg in one sort's order, in blocks that each keep their rows' JSON joined.

The system view is every leg in order: at 20,000 legs, walking a flat list, collecting each
row's bytes and joining them cost more than the rest of an answer together (issue 21: the
target is 25 ms after a change). Here a change touches one block (a few hundred rows): its
joined text is made again at the next answer, and an answer joins the blocks' texts (a few
dozen), one copy of the whole.

Entries are `(*sort key, row)`; sort keys are unique (they end with the row's id and its
machine), so two entries never compare their rows, save an entry with itself.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right, insort
from collections.abc import Iterator
from typing import Any

from pbxcontrol.plugin import Pieces

#: Rows per block when built; a block splits past twice this.
BLOCK = 256
Entry = tuple[Any, ...]


class Order:
    """Entries in order, in blocks; per block the joined JSON of its rows (with and without
    names), made when first asked for after the block changed."""

    def __init__(self, entries: list[Entry]) -> None:
        """`entries` already sorted."""
        self.blocks = [entries[i : i + BLOCK] for i in range(0, len(entries), BLOCK)]
        self.firsts = [block[0] for block in self.blocks]
        self.texts: list[list[bytes | None]] = [[None, None] for _ in self.blocks]
        self.size = len(entries)
        # Per kind (with names, without): asked for since the last `refresh`.
        self.asked = [False, False]

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[Entry]:
        for block in self.blocks:
            yield from block

    def _block_of(self, entry: Entry) -> int:
        return max(bisect_right(self.firsts, entry) - 1, 0)

    def add(self, entry: Entry) -> None:
        if not self.blocks:
            self.blocks, self.firsts, self.texts = [[entry]], [entry], [[None, None]]
            self.size = 1
            return
        i = self._block_of(entry)
        block = self.blocks[i]
        insort(block, entry)
        self.firsts[i] = block[0]
        self.texts[i] = [None, None]
        self.size += 1
        if len(block) > 2 * BLOCK:  # split in two halves
            half = block[BLOCK:]
            del block[BLOCK:]
            self.blocks.insert(i + 1, half)
            self.firsts.insert(i + 1, half[0])
            self.texts.insert(i + 1, [None, None])

    def remove(self, entry: Entry) -> None:
        """Take `entry` out (nothing if it is not held)."""
        if not self.blocks:
            return
        i = self._block_of(entry)
        block = self.blocks[i]
        at = bisect_left(block, entry)
        if at >= len(block) or block[at][-1] is not entry[-1]:
            return
        del block[at]
        self.size -= 1
        if block:
            self.firsts[i] = block[0]
            self.texts[i] = [None, None]
        else:
            del self.blocks[i], self.firsts[i], self.texts[i]

    def joined(self, names: bool) -> bytes:
        """Every row's JSON object in order, as one JSON array."""
        return self.pieces(names).join()

    def pieces(self, names: bool) -> Pieces:
        """The same array as the blocks' texts and the punctuation between them: no copy of
        the whole (the answer goes to the socket in these pieces)."""
        which = 0 if names else 1
        self.asked[which] = True
        parts = [b"["]
        for i, text in enumerate(self.texts):
            parts += (text[which] or self._join(i, which), b",")
        if len(parts) > 1:
            parts[-1] = b"]"  # the last block's comma
        else:
            parts.append(b"]")
        return Pieces(tuple(parts))

    def refresh(self) -> None:
        """Join again the blocks changed since the last answer, for each kind of answer asked
        for since the last refresh: called as the view catches up off the request path (the
        stream hub), so the next answer after a change finds them joined. At most one such
        join per answer: catch-ups with no answer in between leave the joins to the next
        answer (a busy fleet's hub catches up many times a second; a poller asks once)."""
        for which in (0, 1):
            if self.asked[which]:
                self.asked[which] = False
                for i, text in enumerate(self.texts):
                    if text[which] is None:
                        self._join(i, which)

    def _join(self, i: int, which: int) -> bytes:
        """Block `i`'s rows' JSON objects joined (`which` 0: with names, 1: without), kept."""
        rows = [entry[-1] for entry in self.blocks[i]]
        objects = [r.named for r in rows] if which == 0 else [r.plain() for r in rows]
        joined = self.texts[i][which] = b",".join(objects)
        return joined
