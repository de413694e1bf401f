"""Logging to stderr, one line per event (text or JSON, journald-aware), secrets masked."""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any, TextIO

MASK = "***"
# Names whose value is a secret: password, auth_password, db.passwd, x-auth-token, api_key,
# signing_key, client_secret, authorization, credentials, pass, pwd... The name ends there:
# "passwords: chmod 0600" is prose, not a key.
_NAME = (
    r"(?:[\w.-]{0,32}[_.-])?(?:passw(?:or)?d|passphrase|pass|pwd|pw|secret|token|credentials?"
    r"|(?:api|secret|signing|private)_?key|authorization)"
)
_QUOTED = r"""(?P<q>["'])(?:\\.|(?!(?P=q)).)*(?P=q)"""


def _masked(match: re.Match[str]) -> str:
    quote = match.group("q") or ""
    return f"{match.group('k')}{quote}{MASK}{quote}"


_RULES: tuple[tuple[re.Pattern[str], Any], ...] = (
    # JSON or Python repr: "password": "x", 'password': ['x'], "token": 123
    (
        re.compile(
            rf"""(?i)(?P<k>(["']){_NAME}\2\s*[:=]\s*[\[(]?\s*)(?:{_QUOTED}|[^\s,;&}})\]]+)"""
        ),
        _masked,
    ),
    # HTTP credentials after their scheme, in an Authorization header or anywhere.
    (re.compile(r"\b(Bearer|Basic|Digest|Negotiate)(\s+)[\w.~+/=-]{6,}", re.I), rf"\1\2{MASK}"),
    # key=value, key: value, key = 'value', password%3Dx (URL-encoded, as in logged URLs).
    (
        re.compile(
            rf"""(?i)(?P<k>\b{_NAME}(?:\s*[=:]\s*|%3D))(?:{_QUOTED}|(?!\*\*\*)[^\s;&,'"]+)"""
        ),
        _masked,
    ),
    # The password of a URL: postgresql+psycopg://user:secret@host/db
    (re.compile(r"(?i)\b([a-z][a-z0-9+.-]{0,31}://[^\s:/@]*:)[^\s@/]+@"), rf"\1{MASK}@"),
    # JWTs (and any base64url-encoded JSON object): eyJ...
    (re.compile(r"\beyJ[\w-]{6,}(?:\.[\w-]*){0,2}"), MASK),
)

# Attributes every LogRecord has; anything else came in through `extra=`.
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_TEXT = "%(levelname)s %(name)s: %(message)s"


def redact(text: str) -> str:
    """`text` with every secret it seems to carry replaced by ***."""
    for pattern, replacement in _RULES:
        text = pattern.sub(replacement, text)
    return text


# Every character str.splitlines() breaks at; a log reader may break at any of them.
_BREAKS = str.maketrans(
    {
        c: f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"
        for c in "\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
    }
    | {"\n": "\\n", "\r": "\\r"}
)


def one_line(text: str) -> str:
    """`text` with its line breaks escaped: a message is one line, so text a client chose (a
    path, a username) cannot forge a line of its own for fail2ban or a SIEM to believe.
    Tracebacks stay multi-line (under journald every line gets the record's priority)."""
    return text.translate(_BREAKS)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {
        k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")
    }


def scrub(record: logging.LogRecord) -> None:
    """Mask secrets in every field of `record` a formatter prints (idempotent)."""
    if getattr(record, "_scrubbed", False):
        return
    try:
        message = record.getMessage()
    except Exception:  # a wrong format/args pair must not raise into the caller
        message = f"{record.msg!r} % {record.args!r}"
    record.msg, record.args = redact(message), None
    if record.exc_info:
        if not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        record.exc_info = None  # a later formatter would print the raw exception again
    if record.exc_text:
        record.exc_text = redact(record.exc_text)
    if record.stack_info:
        record.stack_info = redact(record.stack_info)
    for name, value in _extras(record).items():
        if not isinstance(value, (int, float, bool, type(None))):
            setattr(record, name, redact(value if isinstance(value, str) else repr(value)))
    record._scrubbed = True


class RedactSecrets(logging.Filter):
    """Defence in depth: code never logs credentials, and this masks any that slip through —
    in the message and its arguments, the traceback, the stack and `extra=` values. It rewrites
    the record itself, so every handler after it sees only masked text."""

    def filter(self, record: logging.LogRecord) -> bool:
        scrub(record)
        return True


def priority(levelno: int) -> int:
    """The syslog priority (RFC 5424) of a logging level, as journald reads it from "<N>"."""
    if levelno >= logging.CRITICAL:
        return 2  # crit
    if levelno >= logging.ERROR:
        return 3  # err
    if levelno >= logging.WARNING:
        return 4  # warning
    return 6 if levelno >= logging.INFO else 7  # info, debug


class TextFormatter(logging.Formatter):
    """`TIME LEVEL LOGGER: message`; under journald `<N>LEVEL LOGGER: message` on every line
    of the record (a traceback's lines are journal entries of their own), no time."""

    def __init__(self, journald: bool = False):
        super().__init__(_TEXT if journald else "%(asctime)s " + _TEXT)
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        scrub(record)
        record.msg = one_line(record.msg)  # (scrub left the whole message in msg)
        text = super().format(record)
        if not self.journald:
            return text
        prefix = f"<{priority(record.levelno)}>"
        return "\n".join(prefix + line for line in text.split("\n"))


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, exc, stack, extra fields."""

    def __init__(self, journald: bool = False):
        super().__init__()
        self.journald = journald

    def format(self, record: logging.LogRecord) -> str:
        scrub(record)
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        for name, value in _extras(record).items():
            entry.setdefault(name, value)
        line = json.dumps(entry, ensure_ascii=False)
        return f"<{priority(record.levelno)}>{line}" if self.journald else line


def journald_stream(stream: TextIO) -> bool:
    """True when `stream` is connected to the journal: systemd sets JOURNAL_STREAM to the
    "device:inode" of the stdout/stderr it connects (systemd.exec(5)); a match means our
    output has not been redirected elsewhere since."""
    expected = os.environ.get("JOURNAL_STREAM", "")
    try:
        st = os.fstat(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
    return expected == f"{st.st_dev}:{st.st_ino}"


def setup(level: str = "INFO", fmt: str = "text", stream: TextIO | None = None) -> None:
    """Route every log record to stderr (or `stream`) in `fmt` ("text" or "json")."""
    stream = stream or sys.stderr
    journald = journald_stream(stream)
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter(journald) if fmt == "json" else TextFormatter(journald)
    handler.setFormatter(formatter)
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # websocket-client and urllib3 are chatty at DEBUG and would log URLs with api_key.
    for name in ("websocket", "urllib3", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
