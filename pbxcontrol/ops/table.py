"""Tables for a terminal (rich) and for a pipe (plain aligned text), and how ages read."""

from __future__ import annotations

from collections.abc import Sequence

from rich.table import Table
from rich.text import Text

# A cell is plain text, or (text, dim note) such as a number and its name.
Cell = str | tuple[str, str]
RIGHT = frozenset({"AGE", "MACHINE", "LEGS", "EVENTS/S"})


def clock(seconds: float) -> str:
    """A call's age as 00:03:12 (hours grow past 99 if they must)."""
    seconds = max(0, int(seconds))
    return f"{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def ago(seconds: float | None) -> str:
    """How long ago, in the largest two units: 4s, 2m05s, 3h02m, 5d04h; "never" for None."""
    if seconds is None:
        return "never"
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _text(cell: Cell) -> str:
    if isinstance(cell, tuple):
        return f"{cell[0]} {cell[1]}".strip() if cell[1] else cell[0]
    return cell


def plain(headers: Sequence[str], rows: Sequence[Sequence[Cell]]) -> str:
    """Aligned columns, two spaces apart, no colour or box: for a pipe, a file, grep."""
    texts = [list(headers)] + [[_text(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in texts) for i in range(len(headers))]
    lines = []
    for r in texts:
        cells = [
            t.rjust(w) if h in RIGHT else t.ljust(w)
            for t, w, h in zip(r, widths, headers, strict=True)
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def rich_table(
    title: str, headers: Sequence[str], rows: Sequence[Sequence[Cell]], styles: Sequence[str]
) -> Table:
    """The same table for a terminal; `styles` colours each row (e.g. by direction)."""
    table = Table(title=title, title_justify="left", header_style="bold", expand=False)
    for h in headers:
        table.add_column(h, justify="right" if h in RIGHT else "left", overflow="fold")
    for row, style in zip(rows, styles, strict=True):
        cells = []
        for cell in row:
            if isinstance(cell, tuple):
                text = Text(cell[0])
                if cell[1]:
                    text.append(f" {cell[1]}", style="dim")
                cells.append(text)
            else:
                cells.append(Text(cell))
        table.add_row(*cells, style=style)
    return table
