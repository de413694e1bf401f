"""The public interface for plugins: the context `setup(ctx)` receives, and what it may use."""

from __future__ import annotations

import importlib
import logging
import pkgutil
from collections.abc import Iterable
from dataclasses import dataclass
from types import ModuleType

from sqlalchemy.orm import Session, sessionmaker

from pbxcontrol.db import models as tables
from pbxcontrol.http.api import ApiRequest, Handler, JsonApi
from pbxcontrol.http.auth import Caller
from pbxcontrol.http.envelope import ApiError

__all__ = ["ApiError", "ApiRequest", "Caller", "PluginContext", "PluginError", "tables"]

PACKAGE = "pbxcontrol.plugins"


class PluginError(Exception):
    """A plugin could not be loaded or set up; stops start-up."""


@dataclass(frozen=True)
class PluginContext:
    name: str
    config: dict[str, str]  # the [plugin:NAME] section, if any
    sessions: sessionmaker[Session]
    log: logging.Logger
    _api: JsonApi

    def add_api_function(self, path: str, handler: Handler, privileges: Iterable[str]) -> None:
        """Serve `handler` at /api/json/<path>/ behind auth, privilege check and envelope."""
        self._api.add(path, handler, privileges)


def available() -> frozenset[str]:
    package = importlib.import_module(PACKAGE)
    return frozenset(m.name for m in pkgutil.iter_modules(package.__path__) if m.ispkg)


def load(name: str) -> ModuleType:
    try:
        module = importlib.import_module(f"{PACKAGE}.{name}")
    except Exception as exc:
        raise PluginError(f"plugin {name!r} failed to import: {exc}") from exc
    if not callable(getattr(module, "setup", None)):
        raise PluginError(f"plugin {name!r} has no setup(ctx) function")
    return module
