"""calls/active/list: the live call legs a person may see, filtered, sorted and named."""

import functools

from pbxcontrol.plugin import PluginContext

from . import query
from .cache import ResponseCache
from .listing import PRIVILEGES, list_active_calls


def setup(ctx: PluginContext) -> None:
    raw = ctx.config.get("cache_megabytes", "16")
    if not raw.strip().isdigit():
        raise ValueError(f"[plugin:active_calls] cache_megabytes: {raw!r} is not a whole number")
    megabytes = int(raw)
    cache = ResponseCache(megabytes * 1024 * 1024) if megabytes > 0 else None
    with ctx.connect() as conn:
        query.check_json_support(conn)
    ctx.add_api_function(
        "calls/active/list", functools.partial(list_active_calls, cache=cache), PRIVILEGES
    )
