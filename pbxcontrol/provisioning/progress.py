"""A progress bar for big documents on a terminal; silent otherwise."""

from __future__ import annotations

import sys
from types import TracebackType
from typing import Any

#: Smaller documents finish before a bar would be worth drawing.
MIN_ITEMS = 10_000


class ProgressBar:
    """Rows done per list, drawn on stderr only when it is a terminal (never into a pipe, a log
    file or the journal) and the document has at least MIN_ITEMS items; `show` overrides."""

    def __init__(self, total_items: int, show: bool | None = None):
        if show is None:
            show = total_items >= MIN_ITEMS and sys.stderr.isatty()
        self._bar: Any = _rich_progress() if show else None
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> ProgressBar:
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def start(self, name: str, total: int | None) -> None:
        """A line for one step; total None draws a pulsing bar (size unknown)."""
        if self._bar is not None and (total is None or total > 0):
            self._tasks[name] = self._bar.add_task(name, total=total)

    def advance(self, name: str, done: int) -> None:
        if name in self._tasks:
            self._bar.advance(self._tasks[name], done)

    def finish(self, name: str) -> None:
        if name in self._tasks:
            self._bar.update(self._tasks[name], total=1, completed=1)


def _rich_progress() -> Any:
    # Imported only when drawn: rich costs ~0.1 s to import.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description:>10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(file=sys.stderr),
    )
