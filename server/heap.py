"""Keep freed large buffers in the coordinator's heap instead of returning them to the OS.

Every round the coordinator receives and builds arrays of tens of MB. glibc's malloc
serves such blocks with fresh ``mmap`` pages and unmaps them when freed, so the next
round faults every page in again: writing the aggregate's bytes then runs at a fraction
of memory bandwidth (bench/RESULTS.md, part d). Raising malloc's mmap and trim
thresholds (``mallopt``, the same knobs as the ``MALLOC_MMAP_THRESHOLD_`` environment
tunables) lets those blocks be reused. The cost: the process keeps its peak heap.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("fractofl")

# From glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
# glibc refuses mmap thresholds above HEAP_MAX_SIZE / 2: 32 MiB on 64-bit systems.
MAX_RETAIN_MB = 32
_MIB = 1024 * 1024


def _glibc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        libc.gnu_get_libc_version  # noqa: B018 (only glibc has it)
        libc.mallopt  # noqa: B018
    except (OSError, AttributeError):
        return None
    return libc


def retain_freed_memory(megabytes: int) -> bool:
    """Let malloc reuse freed blocks up to ``megabytes`` MiB (``updates.retain_freed_mb``).

    Returns whether the setting took effect: ``megabytes <= 0`` keeps malloc's defaults,
    and outside glibc (macOS, musl) there is nothing to set. Raises ValueError for more
    than :data:`MAX_RETAIN_MB`, which glibc would refuse.
    """
    if megabytes <= 0:
        return False
    if megabytes > MAX_RETAIN_MB:
        raise ValueError(
            f"updates.retain_freed_mb={megabytes}: glibc accepts at most {MAX_RETAIN_MB}"
        )
    libc = _glibc()
    if libc is None:
        log.debug("not glibc: updates.retain_freed_mb=%d has no effect", megabytes)
        return False
    threshold = megabytes * _MIB
    # The trim threshold must exceed what is kept, or free() hands the top of the heap back.
    ok = libc.mallopt(M_MMAP_THRESHOLD, threshold) == 1
    ok = libc.mallopt(M_TRIM_THRESHOLD, 8 * threshold) == 1 and ok
    if not ok:
        log.warning(
            "mallopt refused updates.retain_freed_mb=%d; malloc keeps its defaults", megabytes
        )
    return ok
