"""What is known of one micrograph's physical scale (read by ``sem_scale``; used by the
preprocessing that members, coordinator and endpoint share, so it needs nothing but the
standard library)."""

from __future__ import annotations

from dataclasses import dataclass

SCALE_FILE = "scale.yaml"  # a folder's own statement of its images' scale


@dataclass(frozen=True)
class SemScale:
    """What is known of one image's physical scale."""

    pixel_size_um: float | None
    magnification: float | None = None
    databar_px: int | None = None
    source: str = ""
    """Where it came from: ``FEI tags``, ``Zeiss tags``, ``JEOL sidecar``,
    ``Hitachi sidecar``, ``scale.yaml`` (its path), or empty when unknown."""
