"""Fixtures shared by the web tests: Chromium for the browser tests (web/boxkit.py)."""

from web.boxkit import chromium  # noqa: F401 - a fixture, found by pytest here
