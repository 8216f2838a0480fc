"""Fixtures shared by the core tests."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: files would be world-readable unless created with an explicit mode."""
    previous = os.umask(0)
    try:
        yield
    finally:
        os.umask(previous)
