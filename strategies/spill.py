"""A round's member updates, kept on disk while the round collects them.

Streaming aggregation (``updates.aggregation=streamed``) screens each reply as it arrives
and must not keep it in memory, yet the norm test needs the round's median before any
update is accepted. So the update's bytes, exactly as they came over the wire (compressed
or not), go to one file per update in the spill folder and are read back, one at a time,
when the round is aggregated. The folder is emptied when a round starts and when it ends;
the disk it needs is the sum of one round's update sizes (``bytes_sent`` in
``updates.csv``), and a write that would leave less than ``updates.spill_min_free_mb``
free stops with a clear error instead of filling the disk.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

from flwr.app import Array

MIB = 1024 * 1024


class SpillSpaceError(OSError):
    """The spill folder's disk is too full for the next update."""


@dataclass(frozen=True)
class SpilledArray:
    """Where one array's ``.npy`` bytes lie in an update's file, and what they declare."""

    key: str
    dtype: str
    shape: tuple[int, ...]
    stype: str
    offset: int
    length: int


@dataclass(frozen=True)
class SpilledUpdate:
    """One member's update on disk."""

    path: Path
    arrays: tuple[SpilledArray, ...]


class UpdateSpill:
    """One folder of spilled updates (``updates.spill_dir``)."""

    def __init__(self, folder: Path, min_free_mb: int) -> None:
        self.folder = folder
        self.min_free_mb = min_free_mb
        self._count = 0

    def clear(self) -> None:
        """Remove every spilled update (a new round, or a round done)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        self._count = 0

    def put(self, arrays: dict[str, Array]) -> SpilledUpdate:
        """Write one update's arrays; SpillSpaceError when the disk would get too full."""
        self.folder.mkdir(parents=True, exist_ok=True)
        size = sum(len(array.data) for array in arrays.values())
        free = shutil.disk_usage(self.folder).free
        if free - size < self.min_free_mb * MIB:
            raise SpillSpaceError(
                f"the spill folder {self.folder} has {free / MIB:.0f} MiB free; a member's "
                f"update of {size / MIB:.1f} MiB would leave less than "
                f"updates.spill_min_free_mb={self.min_free_mb}. Free space there, or set "
                "updates.spill_dir to a larger disk (or updates.aggregation=gathered to keep "
                "the round's updates in memory), then resume the run"
            )
        self._count += 1
        path = self.folder / f"update-{self._count:06d}.bin"
        index: list[SpilledArray] = []
        offset = 0
        with path.open("wb") as out:
            for key, array in arrays.items():
                out.write(array.data)
                shape = tuple(int(n) for n in array.shape)
                index.append(
                    SpilledArray(key, array.dtype, shape, array.stype, offset, len(array.data))
                )
                offset += len(array.data)
        return SpilledUpdate(path, tuple(index))

    @staticmethod
    def load(update: SpilledUpdate) -> dict[str, Array]:
        """The arrays of a spilled update, as they arrived."""
        data = update.path.read_bytes()
        return {
            item.key: Array(
                dtype=item.dtype,
                shape=item.shape,
                stype=item.stype,
                data=data[item.offset : item.offset + item.length],
            )
            for item in update.arrays
        }
