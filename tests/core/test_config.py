"""Config errors are one line naming file, section and key; exit status 2, no traceback."""

import subprocess
import sys

import pytest

from pbxcontrol import config as config_mod
from pbxcontrol.config import ConfigError
from tests.conftest import write_config


def run_cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "pbxcontrol", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_missing_file_is_one_line_exit_2(tmp_path):
    missing = tmp_path / "nope.ini"
    proc = run_cli("--config", str(missing), "initdb")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"pbxcontrol: error: {missing}: cannot read config file: no such file"
    ]


def test_no_config_given_names_the_environment_variable(tmp_path):
    proc = run_cli("initdb", env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert "PBXCONTROL_CONFIG" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_config_from_environment_variable(tmp_path):
    path = write_config(tmp_path)
    proc = run_cli("initdb", env={"PBXCONTROL_CONFIG": str(path), "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "revision" in proc.stdout


@pytest.mark.parametrize(
    "body, expected",
    [
        ("[http]\nport = eighty\n", "[http] port: 'eighty' is not an integer"),
        ("[http]\nport = 70000\n", "[http] port: 70000 must be between 0 and 65535"),
        ("[recorder]\naudit_days = -1\n", "[recorder] audit_days: -1 must be at least 0"),
        ("[recorder]\naudit_days = a year\n", "[recorder] audit_days: 'a year' is not an integer"),
        ("[logging]\nlevel = LOUD\n", "[logging] level: 'LOUD' is not one of"),
        ("[asterisk:1]\nusername = u\npassword = p\n", "[asterisk:1] ari_url: is required"),
        (
            "[asterisk:1]\nari_url = ftp://x\nusername = u\npassword = p\n",
            "[asterisk:1] ari_url: 'ftp://x' is not an http(s) URL",
        ),
        ("[asterisk:one]\n", "[asterisk:one]: machine sections are named [asterisk:N]"),
        (
            "[asterisk:1]\nari_url = http://127.0.0.1:8088/ari\npassword = p\n",
            "[asterisk:1] username: is required",
        ),
        (
            "[asterisk:1]\nari_url = http://a/ari\nusername = u\npassword = p\n"
            "sweep_interval = 0\n",
            "[asterisk:1] sweep_interval: '0' must be greater than 0",
        ),
        (
            "[asterisk:1]\nari_url = http://a/ari\nusername = u\npassword = p\n"
            "subscribe_all = maybe\n",
            "[asterisk:1] subscribe_all: 'maybe' is not a boolean",
        ),
        (
            "[asterisk:1]\nari_url = http://a/ari\nusername = u\npassword = p\napp = x\n"
            "[asterisk:2]\nari_url = http://b/ari\nusername = u\npassword = p\napp = x\n",
            "[asterisk:1] app: 'x' is used by another machine",
        ),
        ("[recorder]\nhistory_days = -1\n", "[recorder] history_days: -1 must be at least 0"),
        (
            "[recorder]\nhistory_days = a week\n",
            "[recorder] history_days: 'a week' is not an integer",
        ),
        (
            "[recorder]\ntakeover_seconds = 5\nforget_seconds = 9\n",
            "[recorder] forget_seconds: 9 is not between 2 x takeover_seconds (10) and 2592000",
        ),
        (
            "[recorder]\nforget_seconds = never\n",
            "[recorder] forget_seconds: 'never' is not a number",
        ),
        (
            "[http]\nstream_buffer = 1000\n",
            "[http] stream_buffer: 1000 must be between 65536 and 1073741824",
        ),
        (
            "[asterisk:1]\nari_url = http://a/ari\nusername = u\npassword = p\nmax_message = 16M\n",
            "[asterisk:1] max_message: '16M' is not an integer",
        ),
    ],
)
def test_bad_values_name_section_and_key(tmp_path, body, expected):
    path = write_config(tmp_path)
    text = path.read_text()
    # Later sections/keys replace the defaults written by write_config.
    if body.startswith("[http]"):
        text = text.replace("port = 0\n", body.split("\n", 1)[1])
    else:
        text += body
    path.write_text(text)
    with pytest.raises(ConfigError) as err:
        config_mod.load(str(path), known_plugins=frozenset({"active_calls"}))
    assert expected in str(err.value)
    assert str(err.value).startswith(str(path))
    proc = run_cli("--config", str(path), "api")
    assert proc.returncode == 2
    assert len(proc.stderr.strip().splitlines()) == 1
    assert expected in proc.stderr


def test_unknown_plugin_is_refused(tmp_path):
    path = write_config(tmp_path)
    path.write_text(path.read_text().replace("= active_calls", "= active_calls, nope"))
    proc = run_cli("--config", str(path), "api")
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        f"pbxcontrol: error: {path}: [plugins] enabled: unknown plugin 'nope'"
    )


def test_missing_database_url(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("[http]\nport = 1\n")
    proc = run_cli("--config", str(path), "initdb")
    assert proc.returncode == 2
    assert "[database] url: is required" in proc.stderr


def test_not_an_ini_file(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("this is not ini\n")
    proc = run_cli("--config", str(path), "initdb")
    assert proc.returncode == 2
    assert "not a valid INI file" in proc.stderr and "Traceback" not in proc.stderr


def test_duplicate_key(tmp_path):
    path = tmp_path / "c.ini"
    path.write_text("[database]\nurl = sqlite://\nurl = sqlite://\n")
    proc = run_cli("--config", str(path), "initdb")
    assert proc.returncode == 2
    assert "[database] url: is given twice" in proc.stderr


def test_audit_days_defaults_to_a_year_and_zero_keeps_the_audit(tmp_path):
    assert config_mod.load(str(write_config(tmp_path))).audit_days == 365
    kept = write_config(tmp_path, "[recorder]\naudit_days = 0\n")
    assert config_mod.load(str(kept)).audit_days == 0
    assert config_mod.check(str(kept)) == []


def test_sample_config_parses():
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "etc" / "pbxcontrol.ini"
    config = config_mod.load(str(sample), known_plugins=frozenset({"active_calls"}))
    assert config.http_port == 8090
    assert config.plugins == ("active_calls",)
    assert [m.id for m in config.machines] == [1]
    assert config.machines[0].app == "pbxcontrol-1"
    assert config.history_days == 30
    assert config.audit_days == 365
    assert "secret" not in repr(config.machines[0])
    # SPEC §12's keys, each shown (commented) with its default.
    assert (config.forget_seconds, config.stream_buffer) == (3600, 4 * 1024 * 1024)
    assert config.machines[0].max_message == 16 * 1024 * 1024


@pytest.mark.parametrize(
    "line, message",
    [
        ("cache_megabytes = lots", "cache_megabytes: 'lots' is not a whole number"),
        ("memory_view = maybe", "memory_view: 'maybe' is not yes or no"),
        ("memory_view =", "memory_view: '' is not yes or no"),
    ],
)
def test_bad_plugin_setting_stops_start_up_with_its_name(tmp_path, line, message):
    path = write_config(tmp_path, f"[plugin:active_calls]\n{line}\n")
    proc = run_cli("--config", str(path), "api")
    assert proc.returncode == 2
    assert f"[plugin:active_calls] {message}" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_secrets_read_back_exactly_with_hash_and_semicolon(tmp_path):
    """No inline comments: `password = pa ss #1` is the password, all of it."""
    path = write_config(
        tmp_path,
        """\
        ; a comment on its own line is still a comment
        # and so is this one
        [asterisk:1]
        ari_url = http://127.0.0.1:8088/ari
        username = pbx ;user
        password = pa ss #1 ;x
        """,
    )
    config = config_mod.load(str(path))
    assert config.machines[0].password == "pa ss #1 ;x"
    assert config.machines[0].username == "pbx ;user"
    assert config_mod.check(str(path)) == []


def test_sample_config_has_no_comment_after_a_value(tmp_path):
    """A ` ;` or ` #` after a value would now be part of it: the sample has none."""
    import configparser
    import re
    import shutil
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "etc" / "pbxcontrol.ini"
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(sample)
    for section in parser.sections():
        for key, value in parser.items(section):
            assert not re.search(r"\s[;#]", value), f"[{section}] {key} = {value}"
    installed = Path(shutil.copy(sample, tmp_path / "pbxcontrol.ini"))
    installed.chmod(0o600)
    assert config_mod.check(str(installed), frozenset({"active_calls"})) == []
    installed.chmod(0o644)
    assert config_mod.check(str(installed), frozenset({"active_calls"})) == [
        f"{installed}: is readable by every user but holds passwords: chmod 0600 it"
    ]


def test_log_format_is_text_json_or_refused(tmp_path):
    path = write_config(tmp_path, "[logging]\nformat = json\n")
    assert config_mod.load(str(path)).log_format == "json"
    assert config_mod.load(str(write_config(tmp_path))).log_format == "text"
    path = write_config(tmp_path, "[logging]\nformat = xml\n")
    with pytest.raises(ConfigError, match=r"\[logging\] format: 'xml' is not one of text, json"):
        config_mod.load(str(path))


BROKEN = """\
[database]
url = nope
url = sqlite://
[http]
port = eighty
prot = 80
threads = 0
this line is junk
[logging]
level = LOUD
[asterisk:1]
password = s3cret-in-a-bad-file
app = bad app
[asterisk:1]
ari_url = ftp://x
[asterisk:x]
[databse]
url = sqlite://
[plugin:nope]
a = 1
"""


def test_check_reports_every_problem_one_line_each_naming_file_section_key(tmp_path):
    path = tmp_path / "broken.ini"
    path.write_text(BROKEN)
    path.chmod(0o600)
    problems = config_mod.check(str(path), frozenset({"active_calls"}))
    expected = [
        "[database] url: is given twice (again on line 3)",
        "[asterisk:1]: section is given twice (again on line 14)",
        "not a valid INI file: line 8 is neither [section] nor key = value",
        "[database] url: 'nope' is not an SQLAlchemy URL",
        "[logging] level: 'LOUD' is not one of",
        "[asterisk:1] ari_url: is required",
        "[asterisk:1] app: 'bad app' may hold only",
        "[asterisk:1] username: is required",
        "[asterisk:x]: machine sections are named [asterisk:N]",
        "[http] port: 'eighty' is not an integer",
        "[http] threads: 0 must be between 1 and 256",
        "[http] prot: unknown key (a typo?)",
        "[databse]: unknown section (a typo?)",
        "[plugin:nope]: unknown plugin 'nope'",
    ]
    assert len(problems) == len(expected), "\n".join(problems)
    for line, want in zip(problems, expected, strict=True):
        assert line.startswith(f"{path}: ") and want in line
        assert "\n" not in line
    assert "s3cret" not in "".join(problems)
    # Loading stops at the first problem, as before.
    with pytest.raises(ConfigError) as err:
        config_mod.load(str(path))
    assert str(err.value) == problems[0]


def test_check_of_a_good_file_is_empty_and_of_a_missing_file_one_line(tmp_path):
    assert config_mod.check(str(write_config(tmp_path)), frozenset({"active_calls"})) == []
    missing = tmp_path / "nope.ini"
    assert config_mod.check(str(missing)) == [f"{missing}: cannot read config file: no such file"]
    headless = tmp_path / "headless.ini"
    headless.write_text("url = x\n[database]\n")
    assert config_mod.check(str(headless)) == [
        f"{headless}: not a valid INI file: line 1 comes before any [section]"
    ]


def test_ops_allow_is_addresses_or_networks_loopback_by_default(tmp_path):
    from pbxcontrol.auth.proxy import parse_networks

    path = write_config(tmp_path)
    assert config_mod.load(str(path)).ops_allow == parse_networks("127.0.0.1, ::1")
    path.write_text(path.read_text().replace("port = 0\n", "port = 0\nops_allow = 10.0.0.0/8\n"))
    assert config_mod.load(str(path)).ops_allow == parse_networks("10.0.0.0/8")
    path.write_text(path.read_text().replace("10.0.0.0/8", "10.0.0.0/8, monitor.example"))
    assert config_mod.check(str(path)) == [
        f"{path}: [http] ops_allow: 'monitor.example' is not an IP address or network"
    ]
    with pytest.raises(ConfigError):
        config_mod.load(str(path))
