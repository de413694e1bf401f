"""`pbxcontrol calls`: the active calls in a terminal, through calls/active/list in process."""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from pbxcontrol.plugin import Caller, Command, CommandContext, table

from . import params as list_params

LIST = "calls/active/list"
# API parameters given as options of the same name, and those given as on/off flags.
VALUES: tuple[str, ...] = ("customer", "direction", "sort", "callid", "phone", "at")
VALUES += tuple(f"{p}{k}" for p in "scd" for k in ("number", "match", "type"))
FLAGS = list_params.FLAGS
HEADERS = ("AGE", "DIR", "FROM", "TO", "STATUS", "MACHINE", "UNIQUEID", "CALLID")
DIRECTION_STYLES = {"in": "green", "out": "cyan", "internal": "yellow"}


def arguments(calls: argparse.ArgumentParser) -> None:
    """The options of calls/active/list (SPEC §6), with the list's own choices, and how to
    show the answer."""
    calls.description = (
        "The active call legs, as calls/active/list answers them, run in this process as the "
        "system owner (or --as a person). Options are the API's parameters."
    )
    add = calls.add_argument
    add(
        "--customer",
        default="system",
        metavar="ID|all|recursive|system",
        help="whose legs (default: system, every leg)",
    )
    add("--recursive", action="store_true", help="with an ID: its descendants' legs too")
    add("--direction", choices=tuple(list_params.DIRECTIONS), help="only this direction")
    add("--sort", choices=list_params.SORTS, help="sort by this field (default: start)")
    add("--descending", action="store_true", help="sort in descending order")
    add("--names", action="store_true", help="show the directory names of the numbers")
    add("--callid", metavar="CALLID", help="only the legs of this call")
    add("--phone", metavar="LINE", help="only legs from this telephone line (endpoint or number)")
    for part, what in (("s", "source"), ("c", "dialled"), ("d", "destination")):
        add(f"--{part}number", metavar="NUMBER", help=f"{what} number to match")
        add(
            f"--{part}match",
            choices=list_params.MATCHES,
            help=f"how --{part}number matches (contains)",
        )
        add(f"--{part}type", metavar="TYPE", help=f"only this {what} type (phone, external, ...)")
    add("--count", action="store_true", help="only how many legs")
    add(
        "--at",
        metavar="TIME",
        help="the legs live at this past moment, as they were then: a Unix time or ISO 8601 "
        "with an offset (2026-12-05T14:03:00+01:00)",
    )
    add("--as", dest="as_user", metavar="USERNAME", help="see what this person sees")
    add(
        "--watch",
        nargs="?",
        const=1.0,
        type=float,
        metavar="SECONDS",
        help="refresh every SECONDS (default 1) until Ctrl-C",
    )
    add("--json", action="store_true", help="print the answer's data as JSON (for scripts)")


def run(ctx: CommandContext, args: argparse.Namespace) -> int:
    if args.at and args.watch is not None:
        print(
            "error: --at shows one past moment, which does not change: no --watch", file=sys.stderr
        )
        return 2
    listing = ActiveCalls(ctx, args.as_user)
    return show(listing, api_params(vars(args)), watch=args.watch, as_json=args.json)


CALLS = Command("calls", "the active calls, as a table", arguments, run)


class EnvelopeError(Exception):
    """The API answered with an error: one "key: message" per response entry."""

    def __init__(self, envelope: Mapping[str, Any]):
        self.lines = [
            f"{r['key']}: {r['message']}" if r.get("key") else r["message"]
            for r in envelope["responses"]
        ]
        super().__init__("; ".join(self.lines))


def api_params(options: Mapping[str, Any]) -> dict[str, str]:
    """The calls/active/list parameters of the command's options (unset ones left out)."""
    params = {name: str(options[name]) for name in VALUES if options.get(name) not in (None, "")}
    params.update({name: "1" for name in FLAGS if options.get(name)})
    return params


class ActiveCalls:
    """calls/active/list run in this process as one caller: the system owner, or the person
    named by `as_user`; the same validation, privilege check and handler as over HTTP."""

    def __init__(self, ctx: CommandContext, as_user: str | None = None):
        self.ctx = ctx
        self.caller: Caller = ctx.caller(as_user)

    def fetch(self, params: dict[str, str]) -> Any:
        """The envelope's data; an error envelope raises EnvelopeError."""
        envelope = self.ctx.call(LIST, params, self.caller)
        if envelope["responses"][0]["code"] != "200":
            raise EnvelopeError(envelope)
        return envelope["data"]


def rows(data: list[dict[str, Any]], now: float) -> list[list[table.Cell]]:
    """One table row per leg: age, direction, source and destination (with their names when
    asked for), status, machine, uniqueid, callid."""
    return [
        [
            table.clock(now - leg["start"]) if leg["start"] else "",
            leg["direction"],
            (leg["snumber"], leg.get("snumber_name", "")),
            (leg["dnumber"], leg.get("dnumber_name", "")),
            leg["status"],
            str(leg["machine"]),
            leg["uniqueid"],
            leg["callid"],
        ]
        for leg in data
    ]


def _moment(raw: str) -> float | None:
    """`at` as a Unix time (None: now; a malformed one is the API's 400 to tell)."""
    try:
        return list_params.moment(raw) if raw else None
    except ValueError:
        return None


def describe(params: Mapping[str, str], who: str) -> str:
    scope = f"customer={params.get('customer', '(own)')}"
    if params.get("recursive"):
        scope += " recursive"
    return f"{scope}, as {who}"


def render(data: Any, params: Mapping[str, str], who: str, terminal: bool) -> RenderableType:
    """The answer as a table (a count as one line); plain text when not on a terminal. At a
    past moment (`at`), ages are counted to it and the title says it is the past."""
    past = _moment(params.get("at", ""))
    now = time.time() if past is None else past
    stamp = datetime.fromtimestamp(now).strftime(
        "%H:%M:%S" if past is None else "%Y-%m-%d %H:%M:%S"
    )
    if isinstance(data, dict):  # count=1
        count = data["count"]
        return Text(f"{count} legs ({describe(params, who)}, {stamp})" if terminal else f"{count}")
    body = rows(data, now)
    if not terminal:
        return Text(table.plain(HEADERS, body))
    title = f"{len(data)} active legs ({describe(params, who)}, {stamp})"
    if past is not None:
        title = f"{len(data)} legs live at {stamp}, the past, not now ({describe(params, who)})"
    styles = [DIRECTION_STYLES.get(leg["direction"], "") for leg in data]
    return table.rich_table(title, HEADERS, body, styles)


def show(
    calls: ActiveCalls,
    params: dict[str, str],
    *,
    watch: float | None = None,
    as_json: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] | None = None,
) -> int:
    """Print the calls once, or every `watch` seconds until Ctrl-C (in place on a terminal,
    one snapshot after another otherwise). Exit status 0; an error envelope prints
    "error: key: message" lines and returns 2.

    Watching, Ctrl-C ends the wait between two refreshes, not whatever runs when it comes: a
    KeyboardInterrupt inside a query can leave the connection pool's lock taken, and closing
    the pool then waits for ever."""
    with _ctrl_c_stops(watch is not None and sleep is None) as stopped:
        return _show(calls, params, watch, as_json, console, sleep or _napper(stopped))


@contextmanager
def _ctrl_c_stops(wanted: bool) -> Iterator[threading.Event]:
    stopped = threading.Event()
    if not wanted or threading.current_thread() is not threading.main_thread():
        yield stopped
        return
    previous = signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        yield stopped
    finally:
        signal.signal(signal.SIGINT, previous)


def _napper(stopped: threading.Event) -> Callable[[float], None]:
    def nap(seconds: float) -> None:
        if stopped.wait(seconds):
            raise KeyboardInterrupt

    return nap


def _show(
    calls: ActiveCalls,
    params: dict[str, str],
    watch: float | None,
    as_json: bool,
    console: Console | None,
    sleep: Callable[[float], None],
) -> int:
    console = console or Console()
    terminal = console.is_terminal and not as_json
    who = calls.caller.username if calls.caller.username != "(system)" else "the system owner"

    def view() -> RenderableType:
        return render(calls.fetch(params), params, who, terminal)

    def once() -> None:  # not on a terminal: JSON, or the plain table (stamped when watching)
        if as_json:
            console.file.write(json.dumps(calls.fetch(params), ensure_ascii=False) + "\n")
        else:
            if watch is not None:
                console.file.write(f"# {datetime.now():%Y-%m-%d %H:%M:%S}\n")
            console.print(view(), soft_wrap=not terminal)
        console.file.flush()

    try:
        if watch is None or not terminal:
            while True:
                once()
                if watch is None:
                    break
                sleep(watch)
        else:
            with Live(view(), console=console, auto_refresh=False) as live:
                while True:
                    sleep(watch)
                    live.update(view(), refresh=True)
    except EnvelopeError as err:
        for line in err.lines:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0
