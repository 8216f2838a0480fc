"""The benchmark's modules are scripts beside ``bench/run.py``, not a package: put their
folder on the import path, as running ``bench/run.py`` does."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
