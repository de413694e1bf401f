"""`pbxcontrol calls` offers exactly the values calls/active/list accepts: the command and its
choices come from the plugin (its `commands()`), and the parser the core builds from them at
start-up (for --help and completion too) shows exactly the plugin's parameters, checked here."""

from __future__ import annotations

import argparse

import pytest
from pbxcontrol.plugins.active_calls import command as calls_tool
from pbxcontrol.plugins.active_calls import params

from pbxcontrol import cli

#: option of `pbxcontrol calls` -> the values the plugin accepts for that parameter
ACCEPTED = {
    "sort": params.SORT_FIELDS,
    # "" (every direction) is the option left out
    "direction": frozenset(params.DIRECTIONS),
    **{f"{part}match": params.MATCH_MODES for part in "scd"},
}


def calls_options() -> dict[str, argparse.Action]:
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {action.dest: action for action in commands.choices["calls"]._actions}


@pytest.mark.parametrize("option", sorted(ACCEPTED))
def test_each_choice_is_one_the_api_accepts_and_none_is_missing(option):
    assert set(calls_options()[option].choices) == ACCEPTED[option]


def test_every_option_with_choices_is_checked_here():
    assert {dest for dest, a in calls_options().items() if a.choices} == set(ACCEPTED)


def test_the_on_off_options_are_the_apis_flags():
    assert set(calls_tool.FLAGS) == set(params.FLAGS)
    assert all(calls_options()[flag].nargs == 0 for flag in calls_tool.FLAGS)
