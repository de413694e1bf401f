"""The operators' tools through the real command line: check-config, calls, completion, help."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from pbxcontrol.plugins.active_calls import command as calls_mod
from rich.console import Console
from sqlalchemy import insert

from pbxcontrol import cli
from pbxcontrol import config as config_mod
from pbxcontrol.db.models import LEG_INT_FIELDS, LEG_STRING_FIELDS, LEGS_TABLE
from pbxcontrol.ops import commands
from tests.conftest import LIST, build_provisioned, sqlite_only, write_config
from tests.conftest import cli as run_cli

NOW = int(time.time())


def leg(uniqueid: str, callid: str, age: int, **fields) -> dict:
    row: dict = {name: "" for name in LEG_STRING_FIELDS}
    row.update({name: 0 for name in LEG_INT_FIELDS})
    row.update(machine=1, uniqueid=uniqueid, callid=callid, start=NOW - age, status="Up")
    row.update(channel=f"PJSIP/x-{uniqueid}", direction="internal")
    row.update(fields)
    return row


ACME_INTERNAL = dict(stype="phone", snumber="1001", scustomer=3, dtype="phone", dcustomer=3)
LEGS = [
    leg("10.1", "10.1", 192, **ACME_INTERNAL, dnumber="1002"),
    leg("10.2", "10.1", 190, **ACME_INTERNAL, dnumber="1002", channel="PJSIP/bob-1"),
    leg(
        "20.1",
        "20.1",
        12,
        stype="phone",
        snumber="2001",
        scustomer=4,
        dtype="external",
        dnumber="0207946000",
        direction="out",
    ),
    leg("30.1", "30.1", 5, snumber="555", status="Ring"),  # nobody's: the system view only
]


@pytest.fixture
def tools(config_path):
    """A provisioned database with four live legs and its config."""
    config = config_path
    rt = build_provisioned(config)
    with rt.engine.begin() as conn:
        conn.execute(insert(LEGS_TABLE), LEGS)
    yield config, rt
    rt.close()


def uniqueids(output: str) -> set[str]:
    return {word for line in output.splitlines()[1:] for word in line.split() if "." in word}


# -- check-config ----------------------------------------------------------------------------


def test_check_config_says_ok_for_a_good_file(config_path):
    done = run_cli(config_path, "check-config")
    assert (done.returncode, done.stdout) == (0, f"{config_path}: OK\n"), done.stderr


@sqlite_only("the permissions of the SQLite database's files")
def test_check_config_names_a_database_file_others_may_read_and_its_chmod(config_path):
    """SPEC §13: the line names the file and `chmod 0600`, exit status 2; start-up logs the
    same line as a warning."""
    db = Path(config_mod.load(str(config_path)).database_url.removeprefix("sqlite:///"))
    wal = Path(f"{db}-wal")
    wal.write_bytes(b"")
    for path, mode in ((db, 0o644), (wal, 0o604)):
        path.chmod(mode)
    done = run_cli(config_path, "check-config")
    lines = [
        f"{path}: is readable by every user but holds password hashes and the token signing "
        f"key: chmod 0600 {path}"
        for path in (db, wal)
    ]
    assert (done.returncode, done.stdout.splitlines()) == (2, lines)
    started = run_cli(config_path, "status")  # any command that reads the config
    assert [f"WARNING pbxcontrol: {line}" in started.stderr for line in lines] == [True, True]
    wal.unlink(missing_ok=True)  # (SQLite removes it when its last connection closes)
    db.chmod(0o640)  # the group may read: others may not
    assert run_cli(config_path, "check-config").stdout == f"{config_path}: OK\n"


def test_check_config_reports_every_problem_one_per_line(tmp_path, config_path):
    (tmp_path / "bad").mkdir()
    bad = write_config(
        tmp_path / "bad",
        """\
        [logging]
        levle = DEBUG
        [plugin:nope]
        size = 1
        [recorder]
        heartbeat = soon
        [asterix:1]
        """,
    )
    done = run_cli(config_path, "check-config", str(bad))  # FILE wins over --config
    problems = done.stdout.splitlines()
    assert done.returncode == 2
    assert problems == config_mod.check(str(bad), known_plugins=frozenset({"active_calls"}))
    assert len(problems) >= 4 and all(p.startswith(f"{bad}: ") for p in problems)
    for what in ("levle", "'nope'", "heartbeat", "asterix:1"):
        assert any(what in p for p in problems), what


@pytest.mark.parametrize(
    "value, problem",
    [
        ("lots", "'lots' is not an integer"),
        ("0", "0 must be between 1 and 16384"),
        ("99999", "99999 must be between 1 and 16384"),
    ],
)
def test_a_bad_backlog_bound_is_named_by_check_config(tmp_path, value, problem):
    bad = write_config(tmp_path, f"[recorder]\nbacklog_megabytes = {value}\n")
    problems = config_mod.check(str(bad), known_plugins=frozenset({"active_calls"}))
    assert any("[recorder] backlog_megabytes" in p and problem in p for p in problems), problems


def test_check_config_takes_the_file_from_the_environment(tmp_path):
    bad = write_config(tmp_path, "[recorder]\nbatch_size = many\n")
    env = {**os.environ, "PBXCONTROL_CONFIG": str(bad)}
    done = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "check-config"],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stdout == f"{bad}: [recorder] batch_size: 'many' is not an integer\n"


# -- calls -----------------------------------------------------------------------------------


def test_calls_lists_every_leg_as_the_system_owner(tools):
    config, _rt = tools
    done = run_cli(config, "calls")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].split() == [
        "AGE",
        "DIR",
        "FROM",
        "TO",
        "STATUS",
        "MACHINE",
        "UNIQUEID",
        "CALLID",
    ]
    assert uniqueids(done.stdout) == {"10.1", "10.2", "20.1", "30.1"}
    first = lines[1].split()  # sorted by start: the oldest first
    assert first[1:4] == ["internal", "1001", "1002"]
    assert re.fullmatch(r"00:0[3-9]:\d\d", first[0])  # 192 s old when inserted
    assert "\x1b" not in done.stdout and "│" not in done.stdout  # plain when not a terminal


def test_calls_json_is_what_the_http_api_answers(tools):
    config, rt = tools
    import webtest

    app = webtest.TestApp(rt.app)
    for cli_args, params in (
        ((), {"auth_username": "admin", "auth_password": "admin-pass", "customer": "system"}),
        (
            ("--as", "acme", "--customer", ""),
            {"auth_username": "acme", "auth_password": "acme-pass"},
        ),
        (
            ("--as", "reseller", "--customer", "recursive", "--names", "--sort", "dnumber"),
            {
                "auth_username": "reseller",
                "auth_password": "reseller-pass",
                "customer": "recursive",
                "names": "1",
                "sort": "dnumber",
            },
        ),
    ):
        done = run_cli(config, "calls", "--json", *cli_args)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout) == app.get(LIST, params).json["data"], cli_args


def test_calls_as_a_person_sees_only_their_legs(tools):
    config, _rt = tools
    done = run_cli(config, "calls", "--as", "beta", "--customer", "")
    assert done.returncode == 0, done.stderr
    assert uniqueids(done.stdout) == {"20.1"}


def test_calls_filters_and_counts_like_the_api(tools):
    config, _rt = tools
    assert run_cli(config, "calls", "--count").stdout == "4\n"
    out = run_cli(config, "calls", "--direction", "out").stdout
    assert uniqueids(out) == {"20.1"}
    out = run_cli(config, "calls", "--dnumber", "100", "--dmatch", "starts").stdout
    assert uniqueids(out) == {"10.1", "10.2"}
    assert run_cli(config, "calls", "--callid", "10.1", "--count").stdout == "2\n"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ("--as", "acme", "--customer", "4"),
            "error: customer: is not your customer or one under it",
        ),
        (("--as", "panel"), "error: Your role does not allow this."),
        (("--as", "acme"), "error: customer: Only the system owner may list the whole system."),
        (("--customer", "nine"), "error: customer:"),
    ],
)
def test_calls_prints_the_envelope_errors_and_exits_2(tools, args, error):
    config, _rt = tools
    done = run_cli(config, "calls", *args)
    assert done.returncode == 2
    assert done.stderr.startswith(error), done.stderr
    assert done.stdout == ""


def test_calls_as_nobody_or_a_disabled_person_is_an_error(tools):
    config, _rt = tools
    for name, why in (("nobody", "nobody is called 'nobody'"), ("gone", "'gone' is disabled")):
        done = run_cli(config, "calls", "--as", name)
        assert done.returncode == 2 and why in done.stderr, done.stderr
        assert "Traceback" not in done.stderr


def test_calls_watch_refreshes_until_ctrl_c(tools):
    config, rt = tools
    proc = subprocess.Popen(
        [sys.executable, "-m", "pbxcontrol", "--config", str(config), "calls", "--watch", "0.2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    seen, stamps = [], 0
    while stamps < 3:
        line = proc.stdout.readline()
        assert line, proc.stderr.read()
        seen.append(line)
        if line.startswith("# "):
            stamps += 1
            if stamps == 1:
                with rt.engine.begin() as conn:  # a new call shows at a later refresh
                    conn.execute(insert(LEGS_TABLE), [leg("40.1", "40.1", 1)])
    proc.send_signal(signal.SIGINT)
    _rest, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    snapshots = "".join(seen).split("# ")[1:3]
    assert "40.1" not in snapshots[0] or "40.1" in snapshots[1]
    assert "40.1" in "".join(seen)


def terminal() -> Console:
    return Console(file=io.StringIO(), force_terminal=True, width=160, color_system="standard")


def test_calls_on_a_terminal_is_a_table_redrawn_in_place(tools):
    config, _rt = tools
    with commands.context(config_mod.load(str(config))) as ctx:
        listing = calls_mod.ActiveCalls(ctx)
        console = terminal()
        assert calls_mod.show(listing, {"customer": "system"}, console=console) == 0
        once = console.file.getvalue()
        assert "4 active legs (customer=system, as the system owner" in once
        assert "┃" in once and "\x1b[" in once  # a box, colours

        naps = []

        def sleep(seconds):  # Ctrl-C at the third refresh
            naps.append(seconds)
            if len(naps) == 3:
                raise KeyboardInterrupt

        console = terminal()
        rc = calls_mod.show(
            listing, {"customer": "system"}, watch=0.5, console=console, sleep=sleep
        )
        drawn = console.file.getvalue()
        assert (rc, naps) == (0, [0.5, 0.5, 0.5])
        assert drawn.count("4 active legs") >= 3  # drawn, then redrawn...
        assert "\x1b[2K" in drawn and "\x1b[1A" in drawn  # ...over itself, not scrolled


# -- completion and help ---------------------------------------------------------------------


@pytest.mark.parametrize("shell", ["bash", "zsh", "tcsh"])
def test_shell_completion_knows_the_commands_and_options(shell, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(["--print-completion", shell])
    script = capsys.readouterr().out
    assert done.value.code == 0
    for word in ("check-config", "calls", "status", "provision", "initdb"):
        assert word in script, word
    if shell != "tcsh":  # shtab's tcsh script completes commands and files only
        for word in ("--watch", "--as", "--descending", "--print-completion"):
            assert word in script, word


def actions_without_help(parser: argparse.ArgumentParser, where: str = "pbxcontrol") -> list[str]:
    missing = []
    for action in parser._actions:
        if not action.help or action.help == argparse.SUPPRESS:
            missing.append(f"{where} {'/'.join(action.option_strings) or action.dest}")
        if isinstance(action, argparse._SubParsersAction):
            helped = {a.dest for a in action._choices_actions if a.help}
            for name, sub in action.choices.items():
                if name not in helped:
                    missing.append(f"{where} {name} (the command)")
                missing += actions_without_help(sub, f"{where} {name}")
    return missing


def test_every_argument_of_every_command_has_help():
    assert actions_without_help(cli.parser()) == []


def test_the_help_check_catches_an_argument_without_help():
    parser = argparse.ArgumentParser()
    parser.add_argument("--documented", help="yes")
    parser.add_argument("--undocumented")
    commands = parser.add_subparsers(dest="command")
    commands.add_parser("fine", help="yes").add_argument("thing", help="yes")
    commands.add_parser("quiet").add_argument("thing")
    assert actions_without_help(parser) == [
        "pbxcontrol --undocumented",
        "pbxcontrol command",
        "pbxcontrol quiet (the command)",
        "pbxcontrol quiet thing",
    ]
