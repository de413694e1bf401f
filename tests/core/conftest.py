"""Fixtures of the core tier beyond tests/conftest.py: a real Chromium for the attack tests
that watch what the wallboard page sends."""

from tests.browser import browser, playwright  # noqa: F401 - fixtures
