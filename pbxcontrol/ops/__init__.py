"""Operators' tools on the command line: check-config, status, backup, forget-machine, and the
plugins' commands."""

from __future__ import annotations


class OpsError(Exception):
    """The tool cannot go on; the message (one line) is for the operator (exit status 2)."""
