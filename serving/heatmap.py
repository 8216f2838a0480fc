"""Grad-CAM heat maps: which part of an image drives the served network's class.

Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via Gradient-based
Localization", ICCV 2017. The class score's gradient with respect to the last
convolutional feature map, averaged over space, weighs that map's channels; the ReLU of
the weighted sum, upsampled to the request image's size and scaled to [0, 1], is the map.

Vendored into the artifact: imports only torch, numpy and PIL.
"""

from __future__ import annotations

import io
import threading

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

TARGET_LAYERS: dict[str, str] = {}
"""Architecture name -> dotted module name of the Grad-CAM layer, where the last
``nn.Conv2d`` in ``model.modules()`` order is not the right one (none so far: it is for
small_cnn, the ResNets and mobilenet_v3_small)."""


class HeatmapError(RuntimeError):
    """The network has no convolutional layer to explain, or the class is out of range."""


def target_layer(network: nn.Module, architecture: str | None = None) -> nn.Module:
    """The layer whose output Grad-CAM explains: :data:`TARGET_LAYERS`, else the last conv."""
    if architecture in TARGET_LAYERS:
        return network.get_submodule(TARGET_LAYERS[architecture])
    convolutions = [m for m in network.modules() if isinstance(m, nn.Conv2d)]
    if not convolutions:
        raise HeatmapError(
            f"{type(network).__name__} (architecture {architecture!r}) has no nn.Conv2d; "
            "add its layer to fractofl.serving.heatmap.TARGET_LAYERS"
        )
    return convolutions[-1]


def grad_cam(
    network: nn.Module,
    batch: torch.Tensor,
    output_size: tuple[int, int],
    target_class: int | None = None,
    architecture: str | None = None,
) -> np.ndarray:
    """Grad-CAM of one preprocessed image, resized to ``output_size`` (height, width).

    Parameters
    ----------
    network
        The served network, in eval mode; its parameters and hooks are left as they were.
    batch
        The preprocessed image as a (1, C, S, S) tensor on the network's device.
    output_size
        The request image's (height, width): the preprocessing's resize is undone here.
    target_class
        The class to explain; ``None`` explains the predicted class.
    architecture
        The model's architecture name, looked up in :data:`TARGET_LAYERS`.

    Returns
    -------
    numpy.ndarray
        float32, ``output_size``, in [0, 1] (all zeros where no region raises the score).
    """
    layer = target_layer(network, architecture)
    activations: list[torch.Tensor] = []
    caller = threading.get_ident()

    def keep_output(module: nn.Module, inputs: object, output: torch.Tensor) -> None:
        if threading.get_ident() == caller:  # not another thread's forward meanwhile
            activations.append(output)

    handle = layer.register_forward_hook(keep_output)
    try:
        # A forward of its own: the prediction's ran in inference mode, without a graph.
        with torch.inference_mode(False), torch.enable_grad():
            logits = network(batch.detach().clone())
            if target_class is None:
                target_class = int(logits[0].argmax())
            if not 0 <= target_class < logits.shape[1]:
                raise HeatmapError(
                    f"target_class {target_class} is not one of the {logits.shape[1]} classes"
                )
            if not activations:
                raise HeatmapError(f"{type(layer).__name__} did not run in the forward pass")
            feature_map = activations[-1]
            # autograd.grad, not backward(): the parameters' .grad stay untouched.
            (gradient,) = torch.autograd.grad(logits[0, target_class], feature_map)
    finally:
        handle.remove()
    with torch.no_grad():
        weights = gradient.mean(dim=(2, 3), keepdim=True)
        cam = torch.relu((weights * feature_map).sum(dim=1, keepdim=True)).float()
        cam = F.interpolate(cam, size=output_size, mode="bilinear", align_corners=False)[0, 0]
        cam = cam.clamp_min(0)
        peak = float(cam.max())
        cam = cam / peak if peak > 0 else torch.zeros_like(cam)
    return cam.cpu().numpy().astype(np.float32)


def grayscale_png(unit_image: np.ndarray) -> bytes:
    """An H x W array in [0, 1] (a heat map, a decoded image) as an 8-bit grayscale PNG
    (0 -> 0, 1 -> 255)."""
    levels = np.round(np.clip(unit_image, 0.0, 1.0) * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(levels).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
