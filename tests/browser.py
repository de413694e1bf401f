"""A real headless Chromium for the wallboard's tests: Debian's `chromium` (installed with
apt-get when missing, as the sandbox installs its tools), driven by Playwright for Python with
that browser: Playwright never downloads one."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def ensure_chromium() -> str:
    if not os.path.exists(CHROMIUM):
        if os.geteuid() != 0 or shutil.which("apt-get") is None:
            pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium", pytrace=False)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-q"],
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "chromium"],
        ):
            done = subprocess.run(
                cmd, capture_output=True, text=True, env=env, stdin=subprocess.DEVNULL
            )
            if done.returncode != 0:
                pytest.fail(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}", pytrace=False)
    return CHROMIUM


class Page:
    """One browser page with every request, console error and page error it caused."""

    def __init__(self, page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.posted: list[tuple[str, str]] = []  # (url, form body) of each POST
        self.errors: list[str] = []
        self.outage = False  # console errors of a deliberate server stop are expected
        page.on("request", self._request)
        page.on("console", self._console)
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))

    def _request(self, request) -> None:
        self.requests.append(request.url)
        if request.method == "POST":
            self.posted.append((request.url, request.post_data or ""))

    def _console(self, msg) -> None:
        if msg.type == "error" and not (self.outage and "net::ERR_" in msg.text):
            self.errors.append(f"console: {msg.text}")

    def rows(self) -> set[str]:
        return set(
            self.page.locator("#rows tr").evaluate_all("rs => rs.map(r => r.dataset.uniqueid)")
        )

    def check_clean(self) -> None:
        assert not self.errors, self.errors
        foreign = [u for u in self.requests if urlsplit(u).hostname != "127.0.0.1"]
        assert not foreign, f"requests to another host: {foreign}"


@pytest.fixture(scope="session")
def playwright():
    ensure_chromium()
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[test]'")
    with sync_api.sync_playwright() as pw:
        yield pw


@pytest.fixture
def browser(playwright, tmp_path) -> Iterator[Page]:
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),  # a fresh --user-data-dir
        executable_path=CHROMIUM,
        args=FLAGS,
        headless=True,
        viewport={"width": 1920, "height": 1080},
    )
    try:
        yield Page(context.new_page())
    finally:
        context.close()
