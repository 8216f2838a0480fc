"""The coordinator's malloc setting: applied on glibc, refused beyond glibc's limit."""

from __future__ import annotations

import platform

import pytest

from fractofl.server.heap import MAX_RETAIN_MB, retain_freed_memory


def test_zero_keeps_malloc_defaults() -> None:
    assert retain_freed_memory(0) is False


def test_beyond_glibc_limit_is_refused_with_the_setting_named() -> None:
    with pytest.raises(
        ValueError, match=rf"updates.retain_freed_mb=64: .* at most {MAX_RETAIN_MB}"
    ):
        retain_freed_memory(64)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_accepts_the_default_setting() -> None:
    # mallopt returns 1 only when glibc took the value.
    assert retain_freed_memory(MAX_RETAIN_MB) is True
