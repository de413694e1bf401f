"""calls/active/list: the live call legs a person may see, filtered, sorted and named;
calls/hangup, calls/redirect and recording/recordings/start|stop|pause: end, redirect or
record the calls among them, and calls/make (click-to-call), audited and rate-limited (carried
out by the recording process); calls/active/scopes, calls/active/unrecorded and the wallboard
page (/wallboard/) that shows them live; `pbxcontrol calls`, the list in a terminal."""

import functools
from collections.abc import Mapping
from pathlib import Path

from pbxcontrol.plugin import Command, ConfigNotice, PluginContext

from . import command, sqlterms
from .cache import ResponseCache
from .hangup import PRIVILEGES as HANGUP_PRIVILEGES
from .hangup import Hangups
from .listing import PRIVILEGES, list_active_calls
from .make import PRIVILEGES as MAKE_PRIVILEGES
from .make import Makes
from .monitor import ANY as MONITOR_PRIVILEGES
from .monitor import Monitors
from .recording import FUNCTIONS as RECORDING_FUNCTIONS
from .recording import PRIVILEGES as RECORDING_PRIVILEGES
from .recording import Recordings
from .redirect import PRIVILEGES as REDIRECT_PRIVILEGES
from .redirect import Redirects
from .scopes import scopes
from .stream import open_stream
from .unrecorded import unrecorded
from .view import LegView

WALLBOARD = Path(__file__).resolve().parent / "wallboard"
#: The per-person budget of every control function (SPEC §11.1), and its name until issue 24.
RATE, OLD_RATE = "actions_per_minute", "hangups_per_minute"


def setup(ctx: PluginContext) -> None:
    megabytes = _whole_number(ctx, "cache_megabytes", "16")
    cache = ResponseCache(megabytes * 1024 * 1024) if megabytes > 0 else None
    with ctx.connect() as conn:
        sqlterms.check_json_support(conn)
    view = LegView(ctx.journal) if _yes(ctx, "memory_view", "yes") else None
    if view is not None:
        ctx.journal.follow(view.follow)
    days = ctx.history_days  # how far back `at` may go
    ctx.add_api_function(
        "calls/active/list",
        functools.partial(
            list_active_calls, journal=ctx.journal, cache=cache, view=view, history_days=days
        ),
        PRIVILEGES,
        read=True,
    )
    opener = functools.partial(open_stream, journal=ctx.journal, history_days=days, legs=view)
    ctx.add_stream_function("calls/active/list", opener, PRIVILEGES)
    # One budget per person for every control function (SPEC §11.1).
    problems = [n for n in check_config(ctx.config) if not n.deprecated]
    if problems:
        raise ValueError(f"[plugin:active_calls] {problems[0].key}: {problems[0].message}")
    if OLD_RATE in ctx.config:
        ctx.log.warning("[plugin:active_calls] %s is deprecated: rename it %s", OLD_RATE, RATE)
    per_minute = _whole_number(ctx, OLD_RATE if OLD_RATE in ctx.config else RATE, "30")
    ctx.add_api_function(
        "calls/hangup", Hangups(ctx.control, per_minute, ctx.log), HANGUP_PRIVILEGES
    )
    context = ctx.config.get("context", "default")  # the dialling context (SPEC §11.7)
    redirects = Redirects(ctx.control, per_minute, context, ctx.log)
    ctx.add_api_function("calls/redirect", redirects, REDIRECT_PRIVILEGES)
    # SPEC §11.5: where Asterisk writes recordings, and in which format.
    recorded = {
        "format": ctx.config.get("record_format", "wav"),
        "directory": ctx.config.get("recording_dir", "/var/spool/asterisk/recording"),
    }
    for name in RECORDING_FUNCTIONS:
        recordings = Recordings(name, ctx.control, per_minute, recorded, ctx.log)
        ctx.add_api_function(name, recordings, RECORDING_PRIVILEGES)
    ctx.add_api_function(
        "calls/make", Makes(ctx.control, per_minute, context, ctx.log), MAKE_PRIVILEGES
    )
    monitors = Monitors(ctx.control, per_minute, ctx.log)
    ctx.add_api_function("calls/monitor", monitors, MONITOR_PRIVILEGES)
    ctx.add_api_function("calls/active/scopes", scopes, PRIVILEGES, read=True)
    # The wallboard's banner (a read token): since when a machine is not recorded (SPEC §12).
    ctx.add_api_function("calls/active/unrecorded", unrecorded, PRIVILEGES, read=True)
    ctx.add_static("wallboard", WALLBOARD)


def check_config(values: Mapping[str, str]) -> list[ConfigNotice]:
    """The rate limit's old name still works, and says so; both names at once is an error."""
    if OLD_RATE not in values:
        return []
    if RATE in values:
        both = f"set together with {RATE}: keep {RATE} only ({OLD_RATE} is its old name)"
        return [ConfigNotice(OLD_RATE, both)]
    return [ConfigNotice(OLD_RATE, f"renamed {RATE} (one budget for every control function)", True)]


def commands() -> list[Command]:
    """`pbxcontrol calls`: the list in a terminal (command.py)."""
    return [command.CALLS]


def _whole_number(ctx: PluginContext, key: str, default: str) -> int:
    raw = ctx.config.get(key, default)
    if not raw.strip().isdigit():
        raise ValueError(f"[plugin:active_calls] {key}: {raw!r} is not a whole number")
    return int(raw)


def _yes(ctx: PluginContext, key: str, default: str) -> bool:
    raw = ctx.config.get(key, default).strip().lower()
    if raw not in ("yes", "no"):
        raise ValueError(f"[plugin:active_calls] {key}: {raw!r} is not yes or no")
    return raw == "yes"
