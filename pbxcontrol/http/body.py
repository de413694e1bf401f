"""Big response bodies go to the socket from the app's own `bytes`, not through waitress's
output buffer: that copies every body into a BytesIO and one over 1 MB into a temporary FILE
(written, then read back) — for a 7 MB list, more time than the send itself. And what is done
for a request after its answer (the access line) waits until the body has left (`Sent`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from waitress.buffers import ReadOnlyFileBasedBuffer

#: Bodies from this size on are sent from their own bytes; smaller ones join the headers in
#: waitress's buffer (one send for both).
ZERO_COPY_FROM = 64 * 1024


class BytesBody(ReadOnlyFileBasedBuffer):
    """One body as a read-only output buffer over its `bytes` (no copy). Waitress takes a
    ReadOnlyFileBasedBuffer as a buffer of its own (as for wsgi.file_wrapper): it sends from
    it with get/skip and closes it when it is sent or the client is gone."""

    def __init__(self, data: bytes):  # no file: the base class's __init__ is not called
        self.view: memoryview | None = memoryview(data)
        self.offset = 0
        self.remain = len(data)

    def prepare(self, size=None):
        return self.remain

    def get(self, numbytes=-1, skip=False):
        # All that is left, whatever `numbytes` (waitress asks for SO_SNDBUF's size as it
        # was when the connection opened): a slice of a memoryview is no copy, and one send
        # of it takes what the socket has room for.
        if self.view is None:
            return b""
        chunk = self.view[self.offset :]
        if skip:
            self.skip(len(chunk))
        return chunk

    def skip(self, numbytes, allow_prune=False):
        if numbytes > self.remain:
            raise ValueError(f"can't skip {numbytes} bytes of {self.remain}")
        self.offset += numbytes
        self.remain -= numbytes

    def prune(self):
        pass

    def close(self):
        self.view = None  # dropped, not released: a slice of it may be in a send
        self.remain = 0

    def __iter__(self):
        raise TypeError("BytesBody is an output buffer, not an iterable")


class Sent:
    """A response body's pieces, and what to do once they are sent: the WSGI server calls
    `close` after writing the last byte (waitress from its worker thread), so the access
    line is written after the answer has left, not before (a log write, its filters and
    formatting, about 0.1 ms of a 2 ms answer: issue 21)."""

    __slots__ = ("after", "parts")

    def __init__(self, parts: tuple[bytes, ...], after: Callable[[], object]) -> None:
        self.parts = parts
        self.after = after

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.parts)

    def close(self) -> None:
        self.after()
