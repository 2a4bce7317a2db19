"""Chromium and Playwright are here (a skip on a laptop without them, a failure under CI=true).

This module imports no Playwright, so it is collected, and reports, even when Playwright is missing.
"""

from __future__ import annotations

import os

import pytest

pytestmark = pytest.mark.browser


def test_chromium_and_playwright_are_available(chromium_path):
    import playwright.sync_api  # noqa: F401 - the import is the check

    assert os.access(chromium_path, os.X_OK)
