"""calls/active/list: the live call legs a person may see, filtered, sorted and named."""

from pbxcontrol.plugin import PluginContext

from .http import PRIVILEGES, list_active_calls


def setup(ctx: PluginContext) -> None:
    ctx.add_api_function("calls/active/list", list_active_calls, PRIVILEGES)
