"""Log lines: no secret reaches them by any path; journald priorities; JSON lines."""

import json
import logging
import os
import re
import sys

import pytest

from pbxcontrol import logs

SECRETS = [
    "hunter2",
    "pa55-in-args",
    "tok-3xyz987",
    "s3cret-in-url",
    "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJl",
    "dXNlcjpwYXNzd29yZA==",
    "ari-k3y-pass",
    "in-the-stack-77",
    "extra-secret-42",
]


@pytest.fixture
def captured(tmp_path, monkeypatch):
    """logs.setup() writing to a file, as it writes to stderr; root logger restored after."""
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    out = (tmp_path / "stderr").open("w+", encoding="utf-8")

    def configure(fmt="text", *, journald=False):
        if journald:
            st = os.fstat(out.fileno())
            monkeypatch.setenv("JOURNAL_STREAM", f"{st.st_dev}:{st.st_ino}")
        else:
            monkeypatch.delenv("JOURNAL_STREAM", raising=False)
        logs.setup("DEBUG", fmt, stream=out)

        def text():
            out.flush()
            return (tmp_path / "stderr").read_text()

        return text

    yield configure
    root.handlers[:] = saved[0]
    root.setLevel(saved[1])
    out.close()


def log_hostile_records():
    log = logging.getLogger("pbxcontrol.test")
    log.info("login with auth_password=hunter2 failed")
    log.info("form %s", {"auth_password": ["pa55-in-args"], "auth_username": "acme"})
    log.info("body %s", json.dumps({"password": "hunter2", "auth_token": "tok-3xyz987"}))
    log.warning("database postgresql+psycopg://pbx:s3cret-in-url@db/pbx is slow")
    log.warning("token eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhY21lIn0.c2lnbmF0dXJl rejected")
    log.warning("headers %r", {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="})
    log.warning("sent Authorization: Bearer tok-3xyz987")
    log.info("connecting ws://127.0.0.1:8088/ari/events?app=a&api_key=pbx:ari-k3y-pass")
    try:
        raise ValueError("bad auth_password=hunter2 for {'password': 'hunter2'}")
    except ValueError:
        log.exception("request failed")
    try:
        raise RuntimeError("api_key=pbx:ari-k3y-pass") from KeyError("secret=hunter2")
    except RuntimeError as exc:
        log.error("chained", exc_info=exc)
    log.info("where: %s", "x", stack_info=True, extra={"detail": "password=in-the-stack-77"})
    log.info("extra", extra={"params": {"auth_password": "extra-secret-42"}, "n": 3})
    log.info("%s %s", "one argument too few for password=hunter2")  # a broken call


@pytest.mark.parametrize("fmt", ["text", "json"])
@pytest.mark.parametrize("journald", [False, True])
def test_no_secret_reaches_a_log_line_by_any_path(captured, fmt, journald):
    text = captured(fmt, journald=journald)
    log_hostile_records()
    out = text()
    for secret in SECRETS:
        assert secret not in out, f"{secret} leaked in:\n{out}"
    # ...and what is not secret is still there to read.
    assert "request failed" in out and "ValueError" in out and "Traceback" in out
    assert "api_key=***" in out and "pbx:***@db/pbx" in out
    assert "test_logs.py" in out  # the stack_info


def test_the_filter_rewrites_the_record_for_every_handler():
    record = logging.LogRecord("x", logging.ERROR, "", 0, "saw password=%s", ("hunter2",), None)
    record.token = "auth_token=tok-3xyz987"
    try:
        raise ValueError("bad auth_password=hunter2")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert logs.RedactSecrets().filter(record)
    formatted = logging.Formatter("%(message)s %(token)s").format(record)
    assert "hunter2" not in formatted and "tok-3xyz987" not in formatted
    assert "bad auth_password=***" in formatted


@pytest.mark.parametrize(
    "text, expected",
    [
        ('{"password": "hunter2"}', '{"password": "***"}'),
        ("{'password': 'x y'}", "{'password': '***'}"),
        ("password = 'pa ss'", "password = '***'"),
        ("auth_password%3Dhunter2&x=1", "auth_password%3D***&x=1"),
        (
            "GET /a?auth_username=acme;auth_password=p;b=1",
            "GET /a?auth_username=acme;auth_password=***;b=1",
        ),
        ("Authorization: Bearer abcdef123", "Authorization: *** ***"),
        ("redis://:pw-only@host:6379/0", "redis://:***@host:6379/0"),
        ("client_secret=abc signing_key: k", "client_secret=*** signing_key: ***"),
    ],
)
def test_redact_masks_the_value_and_keeps_the_name(text, expected):
    assert logs.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "GET /api/json/calls/active/list/ 200 0.003s",
        "reconcile passed: 5 legs, token lifetime 3600",
        "connecting http://127.0.0.1:8088/ari as pbxcontrol",
        "x.ini is readable by every user but holds passwords: chmod 0600 it",
        "bypass=1 compass: north",
    ],
)
def test_redact_leaves_ordinary_lines_alone(text):
    assert logs.redact(text) == text


def test_under_journald_every_line_carries_its_priority_and_no_time(captured):
    text = captured("text", journald=True)
    log = logging.getLogger("pbxcontrol.test")
    log.debug("d")
    log.info("i")
    log.warning("w")
    log.error("e")
    log.critical("c")
    try:
        int("not a number")
    except ValueError:
        log.exception("boom")
    lines = text().splitlines()
    assert lines[:5] == [
        "<7>DEBUG pbxcontrol.test: d",
        "<6>INFO pbxcontrol.test: i",
        "<4>WARNING pbxcontrol.test: w",
        "<3>ERROR pbxcontrol.test: e",
        "<2>CRITICAL pbxcontrol.test: c",
    ]
    # A traceback's lines are journal entries too: each is an error, so -p err shows them all.
    assert lines[5] == "<3>ERROR pbxcontrol.test: boom"
    assert len(lines) > 7 and all(line.startswith("<3>") for line in lines[5:])


def test_outside_journald_lines_start_with_the_time(captured, monkeypatch):
    text = captured("text")
    logging.getLogger("pbxcontrol.test").warning("w")
    assert re.fullmatch(
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} WARNING pbxcontrol.test: w\n", text()
    )


@pytest.mark.parametrize("journald", [False, True])
def test_a_message_is_one_line_whatever_a_client_put_in_it(captured, journald):
    """A path or username with line breaks cannot forge a line (fail2ban reads them)."""
    text = captured("text", journald=journald)
    forged = "WARNING pbxcontrol.auth: login locked: address 9.9.9.9, x"
    for brk in ("\n", "\r", "\r\n", "\u2028", "\x85", "\x0b"):
        logging.getLogger("pbxcontrol.access").info("GET /api/json/x%s%s 404", brk, forged)
    lines = text().splitlines()
    assert len(lines) == 6
    assert all("INFO pbxcontrol.access: GET /api/json/x\\" in line for line in lines), lines


def test_a_journal_stream_of_another_file_is_not_ours(captured, monkeypatch, tmp_path):
    """stderr redirected elsewhere under systemd: JOURNAL_STREAM names another file."""
    other = os.stat(tmp_path)
    monkeypatch.setenv("JOURNAL_STREAM", f"{other.st_dev}:{other.st_ino}")
    out = (tmp_path / "x").open("w")
    assert not logs.journald_stream(out)
    out.close()


def test_json_format_is_one_object_per_line(captured):
    text = captured("json")
    log = logging.getLogger("pbxcontrol.test")
    log.info("hello %s", "world", extra={"machine": 2})
    try:
        raise ValueError("multi\nline")
    except ValueError:
        log.exception("failed")
    first, second = (json.loads(line) for line in text().splitlines())
    assert first["message"] == "hello world" and first["level"] == "INFO"
    assert first["logger"] == "pbxcontrol.test" and first["machine"] == 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", first["time"])
    assert second["level"] == "ERROR" and "ValueError: multi\nline" in second["exc"]


def test_json_under_journald_is_prefixed_with_the_priority(captured):
    text = captured("json", journald=True)
    logging.getLogger("pbxcontrol.test").error("e")
    line = text()
    assert line.startswith("<3>{") and json.loads(line[3:])["message"] == "e"


def test_the_config_chooses_the_json_format(tmp_path):
    """[logging] format reaches the process's logging set-up."""
    import subprocess

    from tests.conftest import write_config

    path = write_config(tmp_path, "[logging]\nformat = json\n")
    path.chmod(0o644)  # so that start-up logs its warning
    env = {k: v for k, v in os.environ.items() if k != "JOURNAL_STREAM"}
    proc = subprocess.run(
        [sys.executable, "-m", "pbxcontrol", "--config", str(path), "initdb"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    entries = [json.loads(line) for line in proc.stderr.splitlines()]
    assert [e["level"] for e in entries] == ["WARNING"]
    assert "is readable by every user" in entries[0]["message"]
