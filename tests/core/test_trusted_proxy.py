"""`[http] trusted_proxies`: X-Forwarded-For names the client only when a trusted proxy sent it,
so failed logins behind a proxy lock out their own client, not every client."""

import json
import signal
import urllib.request

import pytest

from pbxcontrol import config as config_mod
from pbxcontrol.auth.proxy import ClientAddress, parse_networks
from tests.conftest import LIST, provision_tree, start_server, write_config

PROXIES = ClientAddress(parse_networks("127.0.0.1, 10.0.0.0/8, 2001:db8::/32"))


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("127.0.0.1", "198.51.100.7", "198.51.100.7"),
        ("127.0.0.1", "203.0.113.9, 198.51.100.7", "198.51.100.7"),  # right-most untrusted
        ("127.0.0.1", "198.51.100.7, 10.1.2.3", "198.51.100.7"),  # through two proxies
        ("127.0.0.1", "10.9.9.9, 10.1.2.3", "10.9.9.9"),  # all trusted: the furthest
        ("127.0.0.1", "[2001:db9::5]:443", "2001:db9::5"),
        ("127.0.0.1", "198.51.100.7:5060", "198.51.100.7"),
        ("127.0.0.1", "not-an-address", "127.0.0.1"),  # garbage: the proxy itself
        ("127.0.0.1", "", "127.0.0.1"),
        ("192.0.2.1", "198.51.100.7", "192.0.2.1"),  # an untrusted peer: ignored
        ("::ffff:127.0.0.1", "198.51.100.7", "198.51.100.7"),
    ],
)
def test_client_address_resolution(peer, forwarded, client):
    assert PROXIES.resolve(peer, forwarded) == client


def test_a_bad_trusted_proxy_is_a_config_error(tmp_path):
    path = (
        write_config(tmp_path, "")
        .read_text()
        .replace("port = 0\n", "port = 0\ntrusted_proxies = 10.0.0.1, 10.0.0.300\n")
    )
    (tmp_path / "pbxcontrol.ini").write_text(path)
    with pytest.raises(config_mod.ConfigError, match=r"\[http\] trusted_proxies: '10.0.0.300'"):
        config_mod.load(str(tmp_path / "pbxcontrol.ini"))


def served_behind(tmp_path, trusted: str):
    config = write_config(tmp_path)
    config.write_text(
        config.read_text().replace(
            "port = 0\n",
            f"port = 0\ntrusted_proxies = {trusted}\n"
            "login_failures_per_address = 3\nlogin_failures_per_user = 100\n",
        )
    )
    provision_tree(config)
    return start_server(config, "--log-level", "INFO")


def login(base, forwarded, username="acme", password="acme-pass"):
    request = urllib.request.Request(
        f"{base}{LIST}?auth_username={username};auth_password={password}",
        headers={"X-Forwarded-For": forwarded},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        entry = json.loads(resp.read())["responses"][0]
    return entry["code"], entry["message"]


def fail_three_times(base, forwarded):
    for _ in range(3):
        assert login(base, forwarded, "ghost", "guess")[0] == "401"


def stop(proc) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_failures_through_a_trusted_proxy_lock_out_only_their_client(tmp_path):
    proc, base, lines = served_behind(tmp_path, "127.0.0.0/8")
    try:
        fail_three_times(base, "198.51.100.7")
        code, message = login(base, "198.51.100.7")
        assert code == "401" and message.startswith("Too many failed logins"), message
        assert login(base, "198.51.100.8") == ("200", "OK")  # another client behind the proxy
        assert login(base, "198.51.100.7, 198.51.100.8") == ("200", "OK")  # left one: a lie
    finally:
        err = stop(proc)
    log = "".join(lines) + err
    assert "198.51.100.8 GET /api/json/calls/active/list" in log  # the access log's address


def test_the_header_from_an_untrusted_peer_is_ignored(tmp_path):
    proc, base, lines = served_behind(tmp_path, "192.0.2.10")
    try:
        fail_three_times(base, "198.51.100.7")
        code, message = login(base, "198.51.100.8")  # the same peer: locked out, header or not
        assert code == "401" and message.startswith("Too many failed logins"), message
    finally:
        err = stop(proc)
    assert "198.51.100.8" not in "".join(lines) + err


def test_the_app_sees_the_resolved_address_and_no_proxy_header():
    seen = {}

    def app(environ, start_response):
        seen.update(environ)
        start_response("200 OK", [])
        return [b""]

    environ = {
        "REMOTE_ADDR": "127.0.0.1",
        "HTTP_X_FORWARDED_FOR": "198.51.100.7",
        "HTTP_FORWARDED": "for=203.0.113.1",
        "HTTP_X_FORWARDED_PROTO": "https",
    }
    PROXIES.middleware(app)(environ, lambda *_: None)
    assert seen["REMOTE_ADDR"] == "198.51.100.7" and seen["pbxcontrol.peer"] == "127.0.0.1"
    assert not [key for key in seen if "FORWARDED" in key]
