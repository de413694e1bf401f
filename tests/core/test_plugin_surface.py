"""The plugin surface stays small: a handful of names, the change journal as one object with a
few verbs, and plugins' commands found from the installed plugins alone (no config, no
database), each offered once."""

from __future__ import annotations

import argparse
import types

import pytest

from pbxcontrol import cli, plugin
from pbxcontrol.db import journal
from pbxcontrol.ops import commands

MAX_NAMES = 18


def test_the_plugin_surface_is_at_most_18_names_and_each_is_there():
    assert len(plugin.__all__) <= MAX_NAMES, plugin.__all__
    assert len(set(plugin.__all__)) == len(plugin.__all__)
    assert all(hasattr(plugin, name) for name in plugin.__all__)


def test_the_journal_reads_changes_and_touched_legs_between_two_positions(rt):
    seen = plugin.Journal()
    with rt.engine.connect() as conn:
        before = seen.position(conn)
    with rt.engine.begin() as conn:
        row = {"uniqueid": "1.1", "scustomer": 3, "dcustomer": 0}
        journal.record_legs(conn, 1, [row], ["1.2"], {"1.2": (3, 3)})
    with rt.engine.begin() as conn:
        journal.record_reset(conn)
    with rt.engine.connect() as conn:
        now = seen.position(conn)
        entries = seen.since(conn, before, now)
        touched = seen.touched(conn, before, now)
        version = seen.version(conn)
    assert now.head == before.head + 3
    assert [(e.uniqueid, e.is_upsert, e.is_remove, e.is_reset) for e in entries] == [
        ("1.1", True, False, False),
        ("1.2", False, True, False),
        ("", False, False, True),
    ]
    assert (entries[0].new, entries[1].old) == ((3, 0), (3, 3))
    assert touched == journal.Touched({(1, "1.1"), (1, "1.2")}, reset=True)
    assert version == now.version


def test_following_the_journal_reaches_the_hub_and_is_nothing_without_one():
    followers: list = []
    plugin.Journal(followers.append).follow(print)
    plugin.Journal().follow(print)  # a process that serves no HTTP: never called
    assert followers == [print]


def command(name: str) -> plugin.Command:
    return plugin.Command(name, f"the {name} command", lambda parser: None, lambda ctx, a: 0)


def installed(monkeypatch, modules: dict[str, types.ModuleType | Exception]) -> None:
    """Plugins as if installed: a module, or the error loading it raises."""

    def load(name):
        found = modules[name]
        if isinstance(found, Exception):
            raise found
        return found

    monkeypatch.setattr(plugin, "available", lambda: frozenset(modules))
    monkeypatch.setattr(plugin, "load", load)


def module_offering(*offered) -> types.ModuleType:
    module = types.ModuleType("fake_plugin")
    module.commands = lambda: list(offered)  # type: ignore[attr-defined]
    return module


def test_the_calls_command_comes_from_its_plugin_without_config_or_database():
    calls = next(c for c in commands.offered(set()) if c.name == "calls")
    parser = argparse.ArgumentParser()
    commands.add_parser(parser.add_subparsers(dest="command"), calls)
    args = parser.parse_args(["calls", "--sort", "dnumber"])
    assert (args.plugin_command, args.sort) == (calls, "dnumber")


def test_a_plugin_that_cannot_load_offers_nothing_and_says_so(monkeypatch, capsys):
    installed(
        monkeypatch,
        {
            "broken": plugin.PluginError("plugin 'broken' failed to import: boom"),
            "good": module_offering(command("hello")),
        },
    )
    assert [c.name for c in commands.offered(set())] == ["hello"]
    assert "plugin 'broken' failed to import: boom; its commands are left out" in (
        capsys.readouterr().err
    )


def test_a_command_whose_name_is_taken_is_left_out(monkeypatch, capsys):
    installed(
        monkeypatch,
        {
            "a": module_offering(command("serve"), command("mine")),
            "b": module_offering(command("mine")),
        },
    )
    assert [c.name for c in commands.offered({"serve"})] == ["mine"]
    err = capsys.readouterr().err
    assert "plugin 'a': command 'serve' is taken" in err
    assert "plugin 'b': command 'mine' is taken" in err


def test_a_plugin_without_commands_offers_none_and_a_wrong_offer_is_refused():
    assert plugin.commands_of(types.ModuleType("quiet")) == []
    with pytest.raises(plugin.PluginError, match="must return Commands"):
        plugin.commands_of(module_offering("calls"))


def test_the_parser_lists_the_plugins_commands_with_the_cores(monkeypatch):
    installed(monkeypatch, {"extra": module_offering(command("hello"))})
    sub = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    assert "hello" in sub.choices and "status" in sub.choices
