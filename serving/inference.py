"""SageMaker's inference functions for a fractofl model; ships as ``code/inference.py``.

The SageMaker PyTorch container (and ``fractofl serve local``, which imports this very
file from the artifact) calls :func:`model_fn` once, then :func:`transform_fn` per
request, which runs :func:`decode_input`, :func:`predict_image` and
:func:`encode_output`. The toolkit passes its request context to ``transform_fn``, which
then answers a refused request with the status and the JSON error body of the local
endpoint's contract (``{"error": reason}``), never the toolkit's plain text with a
traceback of container paths. It imports only torch, numpy, PIL, the fractofl modules
vendored beside it (``code/fractofl/``) and the pure-Python ``ecdsa`` that verifies the
signature (``code/ecdsa/``), never flwr or Hydra: the container installs nothing.

Trust chain
-----------
1. ``fractofl serve package`` loads the registry version only after
   :meth:`~fractofl.core.trust.registry.ModelRegistry.load_verified` has checked the Ed25519
   signature over ``metadata.json`` (which holds model.pt's SHA-256) against the trusted
   key; it converts those verified weights to ``model.safetensors`` and records the new
   file's SHA-256 in ``serving.json``.
2. ``metadata.json`` and ``signature`` travel unchanged, so the classes, preprocessing,
   architecture and version stay verifiable by anyone holding the consortium's key.
3. :func:`model_fn` checks the weights file against ``serving.json`` (a corrupt or
   swapped file is refused) and, when a trusted public key is present (PEM text in
   ``$FRACTOFL_TRUSTED_PUBLIC_KEY`` or a ``trusted.pub`` file next to the model),
   verifies the signature over ``metadata.json``; without a key it logs that it did not.
   ``serving.json`` itself is unsigned: the weights are as authentic as the artifact
   (its storage and transfer), vouched for by the packager in step 1. The local endpoint
   always verifies, since it packages the version it serves itself from the registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fractofl.core.images.imageio import ImageBounds
from fractofl.core.images.physical_scale import ScaleError, rescale
from fractofl.core.images.preprocessing import Preprocessing
from fractofl.core.images.scale import SemScale
from fractofl.core.images.tiles import TileError, tile_mean_log_probabilities
from fractofl.core.model.architectures import build_model
from fractofl.serving.contract import (
    DATABAR_OPTION,
    HEATMAP_OPTION,
    MAP_OPTION,
    MODEL_INFO_TYPE,
    PIXEL_SIZE_OPTION,
    PREVIEW_OPTION,
    heatmap_in_headers,
    is_true,
    map_in_headers,
)
from fractofl.serving.decoding import decode_request, media_type, media_type_parameters
from fractofl.serving.heatmap import grad_cam, grayscale_png
from fractofl.serving.mechanism_map import mechanism_map
from fractofl.serving.request_errors import ImageScaleError, NotAcceptableError, RequestError
from fractofl.serving.safetensors_io import SafetensorsError, from_safetensors

log = logging.getLogger("fractofl.inference")

METADATA_FILE = "metadata.json"
SIGNATURE_FILE = "signature"
SERVING_FILE = "serving.json"
SERVING_FORMAT = 1
TRUSTED_KEY_FILE = "trusted.pub"
TRUSTED_KEY_ENV = "FRACTOFL_TRUSTED_PUBLIC_KEY"
JSON_TYPE = "application/json"
_JSON_ACCEPTS = {"", JSON_TYPE, "application/*", "*/*"}
# Grad-CAM keeps every activation of the network: a physical-scale model's heat map is
# computed on its prepared image brought down to at most this many pixels (a coarser
# map), so its memory stays bounded when a request's image is resampled up to the
# preprocessing's limit.
HEATMAP_MAX_PIXELS = 1 << 20
DEFAULT_MIN_CONFIDENCE = 0.5  # serving.min_confidence's default (conf/serving/default.yaml)
IMAGE_BOUNDS_KEY = "image_bounds"
DEFAULT_IMAGE_BOUNDS = ImageBounds(25_000_000, 16384, 16.0)
"""serving.max_image_pixels, max_image_side and max_aspect_ratio's defaults
(conf/serving/default.yaml), for an artifact packaged before serving.json held them."""


class ModelLoadError(RuntimeError):
    """The artifact's files are missing, inconsistent, or fail verification."""


@dataclass(frozen=True)
class ServedModel:
    """What :func:`model_fn` hands to :func:`predict_image`."""

    network: nn.Module
    preprocessing: Preprocessing
    classes: tuple[str, ...]
    version: str
    device: torch.device
    signature_verified: bool
    architecture: str = ""
    temperature: float = 1.0
    """Divides the scores before the softmax (fitted at publication, signed); 1: none."""
    ood_energy_threshold: float | None = None
    """An image whose energy is above it is unlike the training images (signed; None for
    a version published without one)."""
    ood_coverage: float | None = None
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    """A calibrated top probability below it makes the answer uncertain (serving.json)."""
    image_bounds: ImageBounds = DEFAULT_IMAGE_BOUNDS
    """The largest request image decoded (serving.json; serving.max_image_*)."""
    provenance: dict[str, Any] = field(default_factory=dict)
    """Where the model comes from, from its signed metadata; in every answer."""


@dataclass(frozen=True)
class ImageRequest:
    """What :func:`decode_input` returns for a request that asks for more than the class:
    a heat map, and/or a preview (the decoded image as an 8-bit PNG, for TIFF and
    16-bit files that a browser cannot show)."""

    image: np.ndarray
    heatmap: bool = False
    preview: bool = False
    map: bool = False
    """The mechanism map (a physical-scale model only)."""
    scale: SemScale | None = None
    """The pixel size the request gave (``pixel_size_um``), for a physical-scale model."""


def model_fn(model_dir: str) -> ServedModel:
    """Verify and load the model in ``model_dir`` (SageMaker's ``/opt/ml/model``)."""
    folder = Path(model_dir)
    serving = _read_json(folder / SERVING_FILE)
    if serving.get("format") != SERVING_FORMAT:
        raise ModelLoadError(f"{folder / SERVING_FILE} is not of format {SERVING_FORMAT}")
    payload = _read_bytes(folder / METADATA_FILE)
    verified = _check_signature(folder, payload)
    meta = _parse_json(payload, folder / METADATA_FILE)
    try:
        # The registry's folder name (core.trust.registry.version_name, not shipped: it
        # imports cryptography at the top).
        version = f"v{int(meta['version']):06d}"
        preprocessing = Preprocessing.from_dict(meta["preprocessing"])
        classes = tuple(str(c) for c in meta["classes"])
        network = build_model(
            meta["architecture"],
            num_classes=len(classes),
            in_channels=preprocessing.in_channels,
            **meta["arch_args"],
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(
            f"{folder / METADATA_FILE} does not describe a fractofl model ({exc}); repackage it"
        ) from None
    if serving.get("version") != version:
        raise ModelLoadError(
            f"{folder / SERVING_FILE} is for version {serving.get('version')!r} but the "
            f"signed metadata is for {version}; repackage the model"
        )
    try:
        network.load_state_dict(_read_weights(folder, serving))
    except RuntimeError as exc:
        raise ModelLoadError(f"the weights do not fit {meta['architecture']}: {exc}") from exc
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    temperature = _temperature(meta, folder / METADATA_FILE)
    metrics = meta.get("metrics", {})
    threshold = metrics.get("ood_energy_threshold")
    min_confidence = serving.get("min_confidence", DEFAULT_MIN_CONFIDENCE)
    if not isinstance(min_confidence, int | float) or not 0 <= min_confidence <= 1:
        raise ModelLoadError(f"{folder / SERVING_FILE}: min_confidence={min_confidence!r}")
    bounds = _image_bounds(serving, folder / SERVING_FILE)
    log.info(
        "fractofl model %s loaded on %s (signature verified: %s; temperature %.3f)",
        version,
        device,
        verified,
        temperature,
    )
    return ServedModel(
        network.to(device).eval(),
        preprocessing,
        classes,
        version,
        device,
        verified,
        str(meta["architecture"]),
        temperature,
        float(threshold) if isinstance(threshold, int | float) else None,
        metrics.get("ood_coverage"),
        float(min_confidence),
        bounds,
        provenance_of(meta, version, verified),
    )


def provenance_of(meta: dict[str, Any], version: str, verified: bool) -> dict[str, Any]:
    """What an answer says about its model, all from the signed metadata: the version,
    the run and round that made it, the members whose updates are in it (``None`` when
    the version did not record them), the signing key's fingerprint and whether the
    signature was verified here, the architecture and the preprocessing."""
    contributors = meta.get("contributors")
    return {
        "model_version": version,
        "run_id": str(meta.get("run_id", "")),
        "round": meta.get("round"),
        "created": meta.get("created"),
        "contributors": None if contributors is None else [str(c) for c in contributors],
        "signer": meta.get("signer"),
        "signature_verified": verified,
        "architecture": meta.get("architecture"),
        "preprocessing": meta.get("preprocessing"),
    }


def model_info(model: ServedModel) -> dict[str, Any]:
    """The answer to a :data:`MODEL_INFO_TYPE` request: what a client needs to prepare
    a large image itself (the model's preprocessing and the largest image decoded)."""
    return {
        "model_version": model.version,
        "classes": list(model.classes),
        "preprocessing": model.preprocessing.to_dict(),
        IMAGE_BOUNDS_KEY: asdict(model.image_bounds),
        "provenance": model.provenance,
    }


def _image_bounds(serving: dict[str, Any], path: Path) -> ImageBounds:
    """serving.json's ``image_bounds`` (the defaults for an artifact without them)."""
    given = serving.get(IMAGE_BOUNDS_KEY)
    if given is None:
        return DEFAULT_IMAGE_BOUNDS
    try:
        return ImageBounds(
            int(given["max_pixels"]), int(given["max_side"]), float(given["max_aspect_ratio"])
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelLoadError(f"{path}: {IMAGE_BOUNDS_KEY}={given!r} ({exc})") from None


def transform_fn(
    model: ServedModel,
    request_body: bytes,
    request_content_type: str,
    accept: str | None,
    context: Any = None,
) -> tuple[bytes, str]:
    """Answer one request: the JSON answer and its content type.

    Under the SageMaker toolkit (``context`` given), a refused request is answered here
    with its status and ``{"error": reason}``, and an unexpected failure with 500 and
    ``{"error": "internal error; ..."}`` (its traceback goes to the log, not to the
    client). Without a context (the local endpoint, tests) the
    :class:`~fractofl.serving.request_errors.RequestError` is raised for the caller to
    map.
    """
    try:
        (answer,) = transform_batch(model, [(request_body, request_content_type, accept)], context)
        if isinstance(answer, RequestError):
            raise answer
        return answer
    except RequestError as exc:
        if context is None:
            raise
        return _error_reply(context, exc.status_code, exc.message)
    except Exception:
        if context is None:
            raise
        log.exception("fractofl request failed")
        return _error_reply(context, 500, "internal error; see the endpoint's log")


def _error_reply(context: Any, status: int, reason: str) -> tuple[bytes, str]:
    """Set the toolkit's response status; the JSON error body."""
    context.set_response_status(code=status, phrase=HTTPStatus(status).phrase)
    return json.dumps({"error": reason}).encode(), JSON_TYPE


def _temperature(meta: dict[str, Any], path: Path) -> float:
    """The signed calibration temperature (1 for a version published without one)."""
    value = meta.get("metrics", {}).get("temperature", 1.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < 1e3:
        raise ModelLoadError(f"{path}: metrics.temperature={value!r} is not a temperature")
    return float(value)


def decode_input(
    request_body: bytes,
    request_content_type: str,
    context: Any = None,
    bounds: ImageBounds | None = None,
) -> np.ndarray | ImageRequest:
    """Decode a request to float32 grayscale in [0, 1] (H x W), refusing an image over
    ``bounds`` before decoding it.

    The model's own preprocessing (resize, normalise) follows in :func:`predict_image`,
    the first function that is handed the model. A heat map is asked for with the
    content type parameter ``heatmap=true`` (``image/png; heatmap=true``) or, under the
    SageMaker toolkit, which then passes its TorchServe ``context``, with the header
    ``X-Fractofl-Heatmap: true`` or the custom attribute ``heatmap=true``; a preview
    with the parameter ``preview=true``. The image then comes wrapped in an
    :class:`ImageRequest`. Raises a
    :class:`~fractofl.serving.request_errors.RequestError` with status 415 for an
    unsupported content type and 400 for an empty or undecodable body.
    """
    image = decode_request(request_body, request_content_type, bounds)
    options = media_type_parameters(request_content_type)
    heatmap = is_true(options.get(HEATMAP_OPTION)) or heatmap_in_headers(_request_headers(context))
    preview = is_true(options.get(PREVIEW_OPTION))
    wants_map = is_true(options.get(MAP_OPTION)) or map_in_headers(_request_headers(context))
    scale = _request_scale(options)
    if heatmap or preview or wants_map or scale is not None:
        return ImageRequest(image, heatmap, preview, wants_map, scale)
    return image


def _request_scale(options: dict[str, str]) -> SemScale | None:
    """The ``pixel_size_um`` (and ``databar_px``) parameters; ImageScaleError (400) when
    malformed."""
    given = options.get(PIXEL_SIZE_OPTION)
    if given is None:
        return None
    try:
        pixel_size = float(given)
        databar = options.get(DATABAR_OPTION)
        databar_px = None if databar is None else int(databar)
    except ValueError:
        raise ImageScaleError(
            f"{PIXEL_SIZE_OPTION}={given!r} / {DATABAR_OPTION}={options.get(DATABAR_OPTION)!r}: "
            "give the pixel size in micrometres (e.g. 0.05) and the data bar in whole pixels"
        ) from None
    if not 0 < pixel_size < float("inf") or (databar_px is not None and databar_px < 0):
        raise ImageScaleError(
            f"{PIXEL_SIZE_OPTION}={given} must be a positive number of micrometres per pixel "
            f"and {DATABAR_OPTION} a number of rows >= 0"
        )
    return SemScale(pixel_size, None, databar_px, "request")


def predict_image(input_data: np.ndarray | ImageRequest, model: ServedModel) -> dict[str, Any]:
    """Classify one grayscale image: the class, every class's probability (calibrated
    with the version's temperature), the version, whether to refer it to an expert, and
    the model's provenance (:func:`provenance_of`).

    An :class:`ImageRequest` asking for a heat map gets ``"heatmap"`` too: the Grad-CAM
    map of the predicted class at the request image's size, as ``{"width", "height",
    "png_base64"}`` (an 8-bit grayscale PNG, 255 where the class is driven most); one
    asking for a preview gets ``"image"``: the decoded image in the same form.
    """
    prepared = _Prepared.of(input_data, model)
    return prepared.answer(model, _scores(model, [prepared.batch])[0])


@dataclass(frozen=True)
class _Prepared:
    """A request brought to the model's input, ready for a (batched) forward."""

    request: ImageRequest
    prepared: np.ndarray
    batch: torch.Tensor
    """(C, S, S) for a whole-image model; (tiles, C, S, S) for a physical-scale one."""

    @classmethod
    def of(cls, input_data: np.ndarray | ImageRequest, model: ServedModel) -> _Prepared:
        request = input_data if isinstance(input_data, ImageRequest) else ImageRequest(input_data)
        if request.map and not model.preprocessing.physical:
            raise ImageScaleError(
                f"a mechanism map needs a model of physical scale (model.pixel_size_um > 0); "
                f"{model.version} resizes the whole image to {model.preprocessing.image_size} "
                "pixels, so it has no tiles to map: ask without map=true"
            )
        prepared = _prepared(request.image, request.scale, model.preprocessing)
        batch = model.preprocessing.model_input(prepared).to(model.device)
        return cls(request, prepared, batch)

    def answer(self, model: ServedModel, scores: torch.Tensor) -> dict[str, Any]:
        """The answer from this request's ``scores`` (1 x classes: logits, or a
        physical-scale model's tile-mean log-probabilities)."""
        request, image = self.request, self.request.image
        with torch.inference_mode():
            # calibrated (core/learning/calibration.py): the temperature fitted at publication
            calibrated = torch.softmax(scores / model.temperature, dim=1)[0]
            energy = float(-model.temperature * torch.logsumexp(scores / model.temperature, dim=1))
        probabilities: list[float] = calibrated.cpu().tolist()
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        reasons = uncertainty_reasons(model, probabilities[best], energy)
        answer: dict[str, Any] = {
            "class": model.classes[best],
            "probabilities": dict(zip(model.classes, probabilities, strict=True)),
            "model_version": model.version,
            "classes": list(model.classes),
            "uncertain": bool(reasons),
            "uncertain_reasons": reasons,
            "provenance": model.provenance,
        }
        if request.heatmap:
            answer["heatmap"] = _png_field(_heatmap(model, image, self.prepared, self.batch, best))
        if request.preview:
            answer["image"] = _png_field(image)
        if request.map:
            answer["map"] = _map_field(model, image, self.prepared)
        return answer


def _scores(model: ServedModel, batches: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each input's scores (1 x classes) from one forward over all of them: logits, or
    for a physical-scale model the mean of each image's tile probabilities (as in
    evaluation)."""
    with torch.inference_mode():
        if model.preprocessing.physical:
            if len({b.shape for b in batches}) == 1:
                scores = tile_mean_log_probabilities(model.network, torch.stack(batches))
            else:  # tile counts differ: one forward each
                scores = torch.cat(
                    [tile_mean_log_probabilities(model.network, b[None]) for b in batches]
                )
        else:
            scores = model.network(torch.stack(batches)).float()
    return [scores[i : i + 1] for i in range(len(batches))]


def transform_batch(
    model: ServedModel, requests: list[tuple[bytes, str, str | None]], context: Any = None
) -> list[tuple[bytes, str] | RequestError]:
    """Answer several requests ``(body, content_type, accept)`` at once, with one forward
    of the model for all of them (the local endpoint's micro-batching; :func:`transform_fn`
    answers one through it, so a request gets the same answer alone or batched). Each
    request's answer, or its :class:`RequestError`, in order; ``context``: the toolkit's,
    whose headers may ask for a heat map or a map."""
    results: list[tuple[bytes, str] | RequestError] = [
        RequestError("not answered")
        for _ in requests  # each replaced below
    ]
    ready: list[tuple[int, _Prepared]] = []
    for index, (body, content_type, accept) in enumerate(requests):
        try:
            if media_type(content_type) == MODEL_INFO_TYPE:
                results[index] = encode_output(model_info(model), accept)
                continue
            request = decode_input(body, content_type, context, model.image_bounds)
            ready.append((index, _Prepared.of(request, model)))
        except RequestError as exc:
            results[index] = exc
    if ready:
        scores = _scores(model, [prepared.batch for _, prepared in ready])
        for (index, prepared), score in zip(ready, scores, strict=True):
            try:
                results[index] = encode_output(prepared.answer(model, score), requests[index][2])
            except RequestError as exc:
                results[index] = exc
    return results


def _map_field(model: ServedModel, image: np.ndarray, prepared: np.ndarray) -> dict[str, Any]:
    """The mechanism map in the request image's pixels: the tiles' corners and side,
    each tile's calibrated probabilities, each class's area fraction (the share of tiles
    it is the most probable class of) and the dominant class (the largest fraction)."""
    found = mechanism_map(
        model.network,
        model.preprocessing.normalise,
        prepared,
        model.preprocessing.image_size,
        model.temperature,
        model.device,
    )
    factor = image.shape[1] / prepared.shape[1]  # request pixels per prepared pixel
    fractions = found.fractions
    return {
        "classes": list(model.classes),
        "rows": len(found.tops),
        "cols": len(found.lefts),
        "tile_px": round(found.size * factor, 2),
        "tops": [round(top * factor, 1) for top in found.tops],
        "lefts": [round(left * factor, 1) for left in found.lefts],
        "probabilities": np.round(found.probabilities, 4).tolist(),
        "fractions": {c: round(float(f), 4) for c, f in zip(model.classes, fractions, strict=True)},
        "dominant": model.classes[int(fractions.argmax())],
    }


def uncertainty_reasons(model: ServedModel, top: float, energy: float) -> list[str]:
    """Why an answer should go to an expert: a calibrated top probability under
    ``min_confidence``, or an image unlike the training images (its energy above the
    version's signed threshold); empty when neither."""
    reasons = []
    if top < model.min_confidence:
        reasons.append(
            f"low confidence: the most likely class has probability {top:.2f}, under "
            f"{model.min_confidence:.2f} (serving.min_confidence)"
        )
    if model.ood_energy_threshold is not None and energy > model.ood_energy_threshold:
        share = "" if model.ood_coverage is None else f" ({model.ood_coverage:.0%} of them are)"
        reasons.append(
            f"unlike the images the model was trained on: energy {energy:.2f} is above "
            f"{model.ood_energy_threshold:.2f}, the threshold fitted on the coordinator's "
            f"test images{share}"
        )
    return reasons


def _prepared(
    image: np.ndarray, scale: SemScale | None, preprocessing: Preprocessing
) -> np.ndarray:
    """The request image prepared as the model was trained (ImageScaleError, 400, when a
    physical-scale model cannot have it at its scale)."""
    if preprocessing.physical and scale is None:
        raise ImageScaleError(
            f"this model reads images at {preprocessing.pixel_size_um:g} um per pixel: give "
            f"the image's own pixel size as a content type parameter, e.g. 'image/tiff; "
            f"{PIXEL_SIZE_OPTION}=0.05' (and {DATABAR_OPTION}=N if its data bar is not found)"
        )
    try:
        return preprocessing.prepare(image, scale, "the request image")
    except (ScaleError, TileError) as exc:
        raise ImageScaleError(str(exc)) from exc


def _heatmap(
    model: ServedModel, image: np.ndarray, prepared: np.ndarray, batch: torch.Tensor, best: int
) -> np.ndarray:
    """Grad-CAM of class ``best`` at the request image's size. A physical-scale model's
    map is computed on the whole prepared image (its networks pool globally; at most
    HEATMAP_MAX_PIXELS) and laid over the image above its data bar; the bar's rows
    stay 0."""
    height, width = image.shape
    if not model.preprocessing.physical:
        return grad_cam(model.network, batch[None], (height, width), best, model.architecture)
    # The rows above the data bar, in request pixels (from the full prepared shape).
    surface = min(height, max(1, round(prepared.shape[0] * width / prepared.shape[1])))
    if prepared.size > HEATMAP_MAX_PIXELS:
        prepared = rescale(prepared, 1.0, (prepared.size / HEATMAP_MAX_PIXELS) ** 0.5)
    whole = model.preprocessing.normalise(prepared)[None].to(model.device)
    heat = np.zeros((height, width), dtype=np.float32)
    heat[:surface] = grad_cam(model.network, whole, (surface, width), best, model.architecture)
    return heat


def _png_field(unit_image: np.ndarray) -> dict[str, Any]:
    """An H x W array in [0, 1] as ``{"width", "height", "png_base64"}``."""
    height, width = unit_image.shape
    png = base64.b64encode(grayscale_png(unit_image)).decode("ascii")
    return {"width": width, "height": height, "png_base64": png}


def encode_output(prediction: dict[str, Any], accept: str | None) -> tuple[bytes, str]:
    """Encode a prediction as JSON; any other ``Accept`` gets a 406."""
    accepted = {media_type(part) for part in (accept or "").split(",")}
    if not accepted & _JSON_ACCEPTS:
        raise NotAcceptableError(f"accept {accept!r} excludes {JSON_TYPE}, the only answer format")
    return json.dumps(prediction).encode(), JSON_TYPE


def _request_headers(context: Any) -> dict[str, Any]:
    """The request's headers from TorchServe's context (empty without one)."""
    try:
        return dict(context.request_processor[0].get_request_properties())
    except (AttributeError, IndexError, TypeError):
        return {}


def _check_signature(folder: Path, payload: bytes) -> bool:
    """Verify the signature over metadata.json when a trusted key is configured."""
    pem = _trusted_key_pem(folder)
    if pem is None:
        log.warning(
            "fractofl model in %s: signature NOT verified; set %s to the consortium's public "
            "key PEM, or put it in %s next to the model",
            folder,
            TRUSTED_KEY_ENV,
            TRUSTED_KEY_FILE,
        )
        return False
    # python-ecdsa: pure Python, carried in the artifact (serving/vendored.py), so the
    # container installs nothing; verifying needs no secret, so its timing does not matter.
    import ecdsa

    try:
        key = ecdsa.VerifyingKey.from_pem(pem)
    except (ValueError, ecdsa.der.UnexpectedDER, ecdsa.MalformedPointError) as exc:
        raise ModelLoadError(f"the trusted public key is not a PEM public key: {exc}") from None
    if key.curve != ecdsa.curves.Ed25519:
        raise ModelLoadError(f"the trusted public key is of curve {key.curve.name}, not Ed25519")
    try:
        key.verify(_read_bytes(folder / SIGNATURE_FILE), payload)
    except ecdsa.BadSignatureError:
        raise ModelLoadError(
            f"{folder / METADATA_FILE} is not signed by the trusted key (altered, or signed "
            "by another key); refusing to serve it"
        ) from None
    return True


def _read_weights(folder: Path, serving: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights file named in serving.json, checked against the SHA-256 there."""
    name = str(serving.get("weights", ""))
    if not name or Path(name).name != name:
        raise ModelLoadError(f"{folder / SERVING_FILE} names no weights file beside it: {name!r}")
    path = folder / name
    weights = _read_bytes(path)
    if hashlib.sha256(weights).hexdigest() != serving.get("weights_sha256"):
        raise ModelLoadError(
            f"{path} does not match the SHA-256 in {SERVING_FILE}: the file is corrupt or "
            "was replaced; repackage the model"
        )
    try:
        return from_safetensors(weights, str(path))
    except SafetensorsError as exc:
        raise ModelLoadError(str(exc)) from exc


def _trusted_key_pem(folder: Path) -> bytes | None:
    from_env = os.environ.get(TRUSTED_KEY_ENV, "").strip()
    if from_env:
        return from_env.encode()
    path = folder / TRUSTED_KEY_FILE
    return path.read_bytes() if path.is_file() else None


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}; is this a fractofl artifact?") from exc


def _read_json(path: Path) -> dict[str, Any]:
    return _parse_json(_read_bytes(path), path)


def _parse_json(payload: bytes, path: Path) -> dict[str, Any]:
    try:
        values = json.loads(payload)
    except ValueError as exc:
        raise ModelLoadError(f"{path} is not JSON: {exc}") from None
    if not isinstance(values, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return values
