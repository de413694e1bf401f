"""In-process wake-ups after a writer's commit: under `serve`, each recorder commit tells the
stream hub of the same process to read the change journal at once (not at its next poll)."""

from __future__ import annotations

from collections.abc import Callable


class CommitSignal:
    """Called by writers after each commit; calls whoever subscribed (before writers start)."""

    def __init__(self) -> None:
        self._listeners: list[Callable[[], None]] = []

    def subscribe(self, listener: Callable[[], None]) -> None:
        self._listeners.append(listener)

    def __call__(self) -> None:
        for listener in self._listeners:
            listener()
