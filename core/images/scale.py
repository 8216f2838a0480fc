"""What is known of one micrograph's physical scale (read by ``sem_scale``; used by the
preprocessing that members, coordinator and endpoint share, so it needs nothing but the
standard library)."""

from __future__ import annotations

from dataclasses import dataclass

SCALE_FILE = "scale.yaml"  # a folder's own statement of its images' scale


def scaled_shape(height: int, width: int, from_um: float, to_um: float) -> tuple[int, int]:
    """An image's (height, width) once pixels of ``from_um`` micrometres are resampled to
    ``to_um`` (at least one pixel each way)."""
    factor = from_um / to_um
    return max(1, round(height * factor)), max(1, round(width * factor))


@dataclass(frozen=True)
class SemScale:
    """What is known of one image's physical scale."""

    pixel_size_um: float | None
    magnification: float | None = None
    databar_px: int | None = None
    source: str = ""
    """Where it came from: ``FEI tags``, ``Zeiss tags``, ``JEOL sidecar``,
    ``Hitachi sidecar``, ``scale.yaml`` (its path), or empty when unknown."""
