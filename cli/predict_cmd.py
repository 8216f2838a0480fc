"""``fractofl predict IMAGE... --endpoint NAME-or-URL``: classify images with an endpoint."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from fractofl.cli.config import load_run_config
from fractofl.cli.map_picture import map_overlay
from fractofl.core.config.run_config import ServingConfig
from fractofl.core.images.imageio import UnreadableImageError, grayscale_from_array, read_grayscale
from fractofl.core.images.scale import SemScale
from fractofl.core.images.sem_scale import ScaleFileError, read_sem_scale
from fractofl.serving.client import MIB, EndpointClient, describe_provenance
from fractofl.serving.contract import PIXEL_SIZE_OPTION
from fractofl.serving.errors import EndpointError

HEADER = ("file", "class", "probability", "version", "note")
UNCERTAIN = "UNCERTAIN"  # the note of an answer to refer to an expert


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``predict`` to the ``fractofl`` command."""
    text = "classify SEM images with a local endpoint (URL) or a SageMaker endpoint (name)"
    predict = sub.add_parser("predict", help=text, description=text)
    predict.add_argument(
        "targets",
        nargs="+",
        metavar="IMAGE",
        help="image files (.png .jpg .jpeg .tif .tiff .npy); Hydra overrides key=value may follow",
    )
    predict.add_argument(
        "--endpoint",
        required=True,
        metavar="NAME-or-URL",
        help="http://host:port of `fractofl serve local`, or a SageMaker endpoint name",
    )
    predict.add_argument("--json", action="store_true", help="print the answers as JSON")
    predict.add_argument(
        "--heatmap",
        type=Path,
        metavar="OUT.png-or-DIR",
        help="ask for the Grad-CAM heat map and write it over the image (gray image, jet "
        "colours where the class is driven) to OUT.png; with several images, or when it is "
        "a folder, write DIR/<stem>_heatmap.png for each",
    )
    predict.add_argument(
        "--map",
        type=Path,
        metavar="OUT.png-or-DIR",
        help="ask a physical-scale model for the mechanism map (its tiles over the whole "
        "image) and write it over the image with a legend of each class's area fraction to "
        "OUT.png, and the map itself to OUT.json; with several images, or when it is a "
        "folder, DIR/<stem>_map.png and .json for each",
    )
    predict.add_argument(
        "--pixel-size-um",
        type=float,
        metavar="UM",
        help="micrometres per pixel of images whose metadata (FEI/Zeiss tags, JEOL/Hitachi "
        "sidecar, scale.yaml) does not say; a physical-scale model needs it",
    )
    predict.add_argument(
        "--async",
        dest="asynchronous",
        action="store_true",
        help="NAME is a SageMaker Asynchronous Inference endpoint (serve deploy --async): "
        "images of up to 1 GB go through S3 (serving.async_input_path), the answer is "
        "waited for (serving.async_timeout_s)",
    )
    predict.add_argument(
        "--api-key-env",
        metavar="VAR",
        help="environment variable holding the API key (default serving.api_key_env)",
    )
    predict.set_defaults(handler=_predict, cfg=False, overrides=[])


def _predict(args: argparse.Namespace) -> int:
    images = [t for t in args.targets if "=" not in t or Path(t).exists()]
    overrides = [*(t for t in args.targets if t not in images), *args.overrides]
    if not images:
        print("fractofl: error: give at least one IMAGE file", file=sys.stderr)
        return 2
    serving = load_run_config(overrides).serving
    key_env = args.api_key_env or serving.api_key_env
    api_key = os.environ.get(key_env, "") if key_env else ""
    try:
        client = _client(args, serving, api_key)
    except EndpointError as exc:
        print(f"fractofl: error: {exc}", file=sys.stderr)
        return 2
    outputs = Outputs(args.heatmap, args.map, len(images) > 1)
    results = [_classify(client, Path(image), outputs, args.pixel_size_um) for image in images]
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        _print_table(results)
        for failed in (r for r in results if "error" in r):
            print(f"fractofl: {failed['file']}: {failed['error']}", file=sys.stderr)
    return 1 if any("error" in r for r in results) else 0


def _client(args: argparse.Namespace, serving: ServingConfig, api_key: str) -> EndpointClient:
    """The endpoint: a URL, a real-time SageMaker endpoint (its request limit:
    ``serving.max_payload_mb``) or, with ``--async``, an asynchronous one."""
    asynchronous = None
    if args.asynchronous:
        from fractofl.serving.async_invocation import AsyncSettings

        asynchronous = AsyncSettings.of(serving)
    is_name = not args.endpoint.startswith(("http://", "https://"))
    limit = int(serving.max_payload_mb * MIB) if is_name and asynchronous is None else None
    return EndpointClient(
        args.endpoint,
        api_key=api_key or None,
        region=serving.region,
        max_request_bytes=limit,
        asynchronous=asynchronous,
    )


@dataclass(frozen=True)
class Outputs:
    """Where the pictures go: ``--heatmap`` and ``--map`` (a file, or a folder when
    ``several`` images are classified or it is one)."""

    heatmap: Path | None
    map: Path | None
    several: bool

    def target(self, given: Path, image: Path, kind: str) -> Path:
        """``given`` itself, or ``given/<stem>_<kind>.png``."""
        return given / f"{image.stem}_{kind}.png" if self.several or given.is_dir() else given


def _classify(
    client: EndpointClient,
    image: Path,
    outputs: Outputs,
    pixel_size_um: float | None = None,
) -> dict[str, Any]:
    heatmap_out = outputs.heatmap
    try:
        scale = _image_scale(image, pixel_size_um)
        answer = client.predict(
            image,
            heatmap=heatmap_out is not None,
            scale=scale,
            mechanism_map=outputs.map is not None,
        )
    except ScaleFileError as exc:
        return {"file": str(image), "error": str(exc)}
    except EndpointError as exc:
        hint = ""
        if PIXEL_SIZE_OPTION in str(exc) and pixel_size_um is None:
            hint = f"; {image.name} has no scale in its metadata: give --pixel-size-um UM"
        return {"file": str(image), "error": f"{exc}{hint}"}
    result: dict[str, Any] = {
        "file": str(image),
        "class": answer.label,
        "probability": answer.probability,
        "probabilities": answer.probabilities,
        "model_version": answer.model_version,
        "uncertain": answer.uncertain,
        "uncertain_reasons": list(answer.uncertain_reasons),
        "provenance": answer.provenance,
        "preparation": answer.preparation,
    }
    if heatmap_out is not None and answer.heatmap is not None:
        target = outputs.target(heatmap_out, image, "heatmap")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            heatmap_overlay(_read_image(image), answer.heatmap).save(target)
        except (OSError, UnreadableImageError) as exc:
            return {**result, "error": f"cannot write the heat map to {target}: {exc}"}
        result["heatmap"] = str(target)
    if outputs.map is not None and answer.mechanism_map is not None:
        found = answer.mechanism_map
        target = outputs.target(outputs.map, image, "map")
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            map_overlay(_read_image(image), found).save(target)
            target.with_suffix(".json").write_text(json.dumps(found))
        except (OSError, UnreadableImageError) as exc:
            return {**result, "error": f"cannot write the map to {target}: {exc}"}
        result |= {
            "map": str(target),
            "map_fractions": found["fractions"],
            "map_dominant": found["dominant"],
        }
    return result


def _image_scale(image: Path, pixel_size_um: float | None) -> SemScale | None:
    """The image's scale from its metadata (read here: the endpoint gets the numbers,
    not a parser of every vendor's format), else ``--pixel-size-um``."""
    scale = read_sem_scale(image, image.parent) if image.is_file() else None
    if scale is not None and scale.pixel_size_um is not None:
        return scale
    return SemScale(pixel_size_um, source="--pixel-size-um") if pixel_size_um else None


def heatmap_overlay(gray: np.ndarray, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """An RGB picture: ``gray`` (H x W in [0, 1]) with ``heatmap`` (same size, [0, 1])
    over it in matplotlib's ``jet`` colours, more opaque where the heat is higher."""
    from matplotlib import colormaps

    if gray.shape != heatmap.shape:
        raise ValueError(f"heat map of {heatmap.shape} does not fit an image of {gray.shape}")
    colours = colormaps["jet"](np.clip(heatmap, 0, 1))[..., :3]
    weight = alpha * np.clip(heatmap, 0, 1)[..., None]
    blended = (1 - weight) * np.clip(gray, 0, 1)[..., None] + weight * colours
    return Image.fromarray(np.round(blended * 255).astype(np.uint8))


def _read_image(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        return grayscale_from_array(np.load(path, allow_pickle=False), str(path))
    return read_grayscale(path)


def _print_table(results: list[dict[str, Any]]) -> None:
    rows = [
        (r["file"], "ERROR", "-", "-", "-")
        if "error" in r
        else (
            r["file"],
            r["class"],
            f"{r['probability']:.3f}",
            r["model_version"],
            UNCERTAIN if r.get("uncertain") else "-",
        )
        for r in results
    ]
    widths = [max(len(row[i]) for row in [HEADER, *rows]) for i in range(len(HEADER))]
    for row in [HEADER, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    for result in results:
        if result.get("uncertain"):
            reasons = "; ".join(result.get("uncertain_reasons", [])) or "no reason given"
            print(f"{result['file']}: {UNCERTAIN}, refer to an expert: {reasons}")
    for result in (r for r in results if r.get("preparation")):
        print(f"{result['file']}: {result['preparation']}")
    for result in (r for r in results if "map" in r):
        shares = ", ".join(f"{c} {100 * f:.1f} %" for c, f in result["map_fractions"].items())
        print(
            f"{result['file']}: map: {result['map_dominant']} dominant; {shares} -> {result['map']}"
        )
    described = {describe_provenance(r["provenance"]) for r in results if r.get("provenance")}
    for line in sorted(described):
        print(f"model {line}")
