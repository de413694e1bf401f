"""Websocket frames (RFC 6455) cut out of what the socket gave, many per read."""

from __future__ import annotations

OPCODE_CONT, OPCODE_TEXT, OPCODE_BINARY = 0x0, 0x1, 0x2
OPCODE_CLOSE, OPCODE_PING, OPCODE_PONG = 0x8, 0x9, 0xA


class FrameError(Exception):
    """The peer broke the framing: the connection cannot go on."""


class MessageTooBig(FrameError):
    """A message is larger than the reader accepts: the connection is closed (and the machine
    resynced) rather than buffering whatever a frame header announces."""


class FrameBuffer:
    """Bytes read off the socket in, whole messages out: `feed` returns (opcode, payload) for
    every complete data message (fragments joined) and control frame, in order; a frame cut
    by the read stays buffered for the next one.

    Why not websocket-client's `recv_data`: it reads each frame with three or four small reads
    and the recorder's reader set the socket's timeout per message; that was three quarters of
    the reader's time at ~10,000 events/s, on a thread that shares the interpreter with the
    writer. A read of 256 KB here brings a few hundred events at once."""

    def __init__(self, max_message: int = 16 * 1024 * 1024) -> None:
        self.max_message = max_message  # bytes of one message, fragments joined
        self.refused: MessageTooBig | None = None  # the connection cannot go on after it
        self._buf = bytearray()
        self._fragments: list[bytes] = []
        self._fragmented = 0  # bytes of the fragments so far
        self._fragment_opcode = OPCODE_TEXT

    def feed(self, chunk: bytes) -> list[tuple[int, bytes]]:
        """The messages `chunk` completes. A message over `max_message` raises MessageTooBig,
        once the messages before it are returned (`refused` holds it meanwhile)."""
        if self.refused is not None:
            raise self.refused
        buf = self._buf
        buf += chunk
        out: list[tuple[int, bytes]] = []
        pos, end = 0, len(buf)
        while end - pos >= 2:
            first, second = buf[pos], buf[pos + 1]
            size, head = second & 0x7F, 2
            if size == 126:
                size, head = int.from_bytes(buf[pos + 2 : pos + 4], "big"), 4
            elif size == 127:
                size, head = int.from_bytes(buf[pos + 2 : pos + 10], "big"), 10
            masked = second & 0x80
            if masked:
                head += 4
            if end - pos < head:  # the extended length is not all here yet
                break
            # Refused as soon as the header says so: never buffered up to its announced size.
            if first & 0x0F < OPCODE_CLOSE and self._fragmented + size > self.max_message:
                self.refused = MessageTooBig(
                    f"a message of {self._fragmented + size} bytes or more is over "
                    f"max_message ({self.max_message})"
                )
                if not out:
                    raise self.refused
                break
            if end - pos < head + size:
                break
            payload = bytes(buf[pos + head : pos + head + size])
            if masked:  # servers do not mask (RFC 6455 5.1); accept it all the same
                payload = _unmask(payload, bytes(buf[pos + head - 4 : pos + head]))
            pos += head + size
            self._frame(first, payload, out)
        del buf[:pos]
        return out

    def _frame(self, first: int, payload: bytes, out: list[tuple[int, bytes]]) -> None:
        fin, opcode = first & 0x80, first & 0x0F
        if opcode >= OPCODE_CLOSE:  # control frames may come between fragments
            out.append((opcode, payload))
        elif opcode == OPCODE_CONT:
            if not self._fragments:
                raise FrameError("continuation frame without a first fragment")
            self._fragments.append(payload)
            self._fragmented += len(payload)
            if fin:
                out.append((self._fragment_opcode, b"".join(self._fragments)))
                self._fragments, self._fragmented = [], 0
        elif opcode in (OPCODE_TEXT, OPCODE_BINARY):
            if self._fragments:
                raise FrameError("a new message inside a fragmented one")
            if fin:
                out.append((opcode, payload))
            else:
                self._fragment_opcode, self._fragments = opcode, [payload]
                self._fragmented = len(payload)
        else:
            raise FrameError(f"reserved opcode {opcode:#x}")


def _unmask(payload: bytes, key: bytes) -> bytes:
    repeated = (key * (len(payload) // 4 + 1))[: len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(payload), "big"
    )
