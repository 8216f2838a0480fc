"""Headless Chromium from Debian's packages, driven by Playwright (no browser download)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, sync_playwright

CHROMIUM_ENV = "FRACTOFL_CHROMIUM"
DEFAULT_CHROMIUM = "/usr/bin/chromium"
ARTIFACTS_ENV = "FRACTOFL_TEST_ARTIFACTS"
DEFAULT_ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
# Headless as root in a container, with no network beyond loopback: without the
# background-networking flags Chromium keeps trying Google's hosts.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def chromium_path() -> str:
    """``$FRACTOFL_CHROMIUM`` or Debian's ``/usr/bin/chromium``; fails with what to run."""
    path = os.environ.get(CHROMIUM_ENV, DEFAULT_CHROMIUM)
    if not Path(path).is_file():
        pytest.fail(
            f"no Chromium at {path}: run `make setup` (it installs Debian's chromium with "
            f"scripts/install-browser.sh) or set {CHROMIUM_ENV} to a Chromium binary"
        )
    return path


def artifacts_dir() -> Path:
    """Where tests leave screenshots: ``$FRACTOFL_TEST_ARTIFACTS`` or ``test-artifacts/``."""
    folder = Path(os.environ.get(ARTIFACTS_ENV, DEFAULT_ARTIFACTS))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """One headless Chromium per test module, closed afterwards."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True
        )
        try:
            yield launched
        finally:
            launched.close()
