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
            "[asterisk:1]\nari_url = http://a/ari\nusername = u\npassword = p\nsweep_interval = 0\n",
            "[asterisk:1] sweep_interval: '0' must be greater than 0",
        ),
        (
            "[asterisk:1]\nari_url = http://a/ari\nusername = u\npassword = p\nsubscribe_all = maybe\n",
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


def test_sample_config_parses():
    from pathlib import Path

    sample = Path(__file__).resolve().parents[2] / "etc" / "pbxcontrol.ini"
    config = config_mod.load(str(sample), known_plugins=frozenset({"active_calls"}))
    assert config.http_port == 8090
    assert config.plugins == ("active_calls",)
    assert [m.id for m in config.machines] == [1]
    assert config.machines[0].app == "pbxcontrol-1"
    assert config.history_days == 30
    assert "secret" not in repr(config.machines[0])


def test_bad_plugin_setting_stops_start_up_with_its_name(tmp_path):
    path = write_config(tmp_path, "[plugin:active_calls]\ncache_megabytes = lots\n")
    proc = run_cli("--config", str(path), "api")
    assert proc.returncode == 2
    assert "[plugin:active_calls] cache_megabytes: 'lots' is not a whole number" in proc.stderr
    assert "Traceback" not in proc.stderr
