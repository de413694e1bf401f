"""Logging to stderr, one line per event, with secrets scrubbed from every line."""

from __future__ import annotations

import logging
import re
import sys

_SECRET = re.compile(r"(?i)((?:auth_)?password|api_key|token|secret)(\s*[=:]\s*|%3D)([^\s;&,'\"]+)")


class RedactSecrets(logging.Filter):
    """Defence in depth: code never logs credentials, and this masks any that slip through."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = _SECRET.sub(r"\1\2***", message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactSecrets())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # websocket-client and urllib3 are chatty at DEBUG and would log URLs with api_key.
    for name in ("websocket", "urllib3", "alembic"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLevelName(level)))
