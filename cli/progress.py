"""A dependency-free progress line for long loops (also readable in CI logs)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    """Prints ``label done/total (pct) rate`` every ``step`` percent and at the end."""

    def __init__(self, label: str, stream: TextIO = sys.stderr, step: int = 10) -> None:
        self.label = label
        self.stream = stream
        self.step = step
        self._next = 0
        self._started = time.monotonic()

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if percent >= self._next or done == total:
            rate = done / max(time.monotonic() - self._started, 1e-9)
            self.stream.write(f"{self.label}: {done}/{total} ({percent}%), {rate:.0f}/s\n")
            self.stream.flush()
            self._next = percent + self.step
