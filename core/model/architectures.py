"""Model registry: networks selected by name, each with its default preprocessing.

An unknown name or argument fails with the valid ones listed. Every model takes
grayscale input (``in_channels=1``) because SEM images are grayscale. Every model takes
``norm``: ``batch`` (BatchNorm, the default) or ``group`` (GroupNorm with
``norm_groups`` groups, Wu & He 2018): GroupNorm keeps no running statistics, so
members whose microscopes differ do not average them (a personalization option beside
FedBN).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from fractofl.core.images.preprocessing import Preprocessing


class UnknownModelError(KeyError):
    """A model name or argument that the registry does not know."""

    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class ModelSpec:
    """A registered architecture: how to build it and how to prepare its input."""

    name: str
    builder: Callable[..., nn.Module]
    mean: float
    std: float
    description: str


NORMS = ("batch", "group")


def norm_layer(norm: str, groups: int) -> Callable[[int], nn.Module]:
    """A constructor of the normalisation layer for ``channels`` (``model.args.norm``)."""
    if norm == "batch":
        return nn.BatchNorm2d
    if norm != "group":
        raise UnknownModelError(
            f"model.args.norm={norm!r} is not a normalisation; choose one of {', '.join(NORMS)}"
        )
    if groups < 1:
        raise UnknownModelError(f"model.args.norm_groups={groups} must be at least 1")

    def group_norm(channels: int) -> nn.Module:
        # The largest divisor of the channel count not above `groups`: GroupNorm needs one.
        count = max(g for g in range(1, min(groups, channels) + 1) if channels % g == 0)
        return nn.GroupNorm(count, channels)

    return group_norm


class SmallCNN(nn.Module):
    """Four conv blocks and global average pooling: trains in seconds on a CPU."""

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 1,
        width: int = 32,
        dropout: float = 0.2,
        norm: str = "batch",
        norm_groups: int = 8,
    ) -> None:
        super().__init__()
        make_norm = norm_layer(norm, norm_groups)
        widths = [width, width * 2, width * 4, width * 4]
        layers: list[nn.Module] = []
        channels = in_channels
        for out in widths:
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, padding=1, bias=False),
                make_norm(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Dropout(dropout),
            nn.Linear(channels, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _small_cnn(
    num_classes: int,
    in_channels: int,
    width: int = 32,
    dropout: float = 0.2,
    norm: str = "batch",
    norm_groups: int = 8,
) -> nn.Module:
    return SmallCNN(
        num_classes, in_channels, width=width, dropout=dropout, norm=norm, norm_groups=norm_groups
    )


def torchvision_models() -> Any:
    """``torchvision.models``, imported when a torchvision network is first built: importing
    torchvision imports ``torch._dynamo`` (about 1.3 s per process here), which every
    member, coordinator and command process would otherwise pay for the default small CNN.
    The warm member calls it once so that its forked ClientApps do not."""
    from torchvision import models

    return models


def _resnet(depth: int) -> Callable[..., nn.Module]:
    def build(
        num_classes: int,
        in_channels: int,
        small_input: bool = False,
        norm: str = "batch",
        norm_groups: int = 32,
    ) -> nn.Module:
        """``small_input`` swaps the 7x7/2 stem and max-pool for a 3x3/1 stem (images < 96 px)."""
        constructor = getattr(torchvision_models(), f"resnet{depth}")
        model = constructor(
            weights=None, num_classes=num_classes, norm_layer=norm_layer(norm, norm_groups)
        )
        if small_input:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
            model.maxpool = nn.Identity()  # type: ignore[assignment]
        else:
            model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
        return model

    return build


def _mobilenet_v3_small(
    num_classes: int,
    in_channels: int,
    dropout: float = 0.2,
    norm: str = "batch",
    norm_groups: int = 8,
) -> nn.Module:
    model = torchvision_models().mobilenet_v3_small(
        weights=None,
        num_classes=num_classes,
        dropout=dropout,
        norm_layer=None if norm == "batch" else norm_layer(norm, norm_groups),
    )
    first = model.features[0][0]
    model.features[0][0] = nn.Conv2d(
        in_channels, first.out_channels, first.kernel_size, first.stride, first.padding, bias=False
    )
    return model


MODEL_REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("small_cnn", _small_cnn, 0.5, 0.25, "4-block CNN, 0.24 M parameters"),
        ModelSpec("resnet18", _resnet(18), 0.5, 0.25, "torchvision ResNet-18, 11.2 M parameters"),
        ModelSpec("resnet34", _resnet(34), 0.5, 0.25, "torchvision ResNet-34, 21.3 M parameters"),
        ModelSpec("resnet50", _resnet(50), 0.5, 0.25, "torchvision ResNet-50, 23.5 M parameters"),
        ModelSpec(
            "mobilenet_v3_small", _mobilenet_v3_small, 0.5, 0.25, "torchvision MobileNetV3-S"
        ),
    )
}


def batchnorm_keys(model: nn.Module) -> frozenset[str]:
    """The state-dict keys of ``model``'s BatchNorm layers (weights, biases, statistics)."""
    keys = set()
    for prefix, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            keys |= {f"{prefix}.{name}" if prefix else name for name in module.state_dict()}
    return frozenset(keys)


def get_spec(name: str) -> ModelSpec:
    """Look up a registered model, failing with the list of known names."""
    try:
        return MODEL_REGISTRY[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r} (model.name); "
            f"known models: {', '.join(sorted(MODEL_REGISTRY))}"
        ) from None


def model_arguments(name: str) -> list[str]:
    """Names of the optional arguments a registered model accepts (``model.args.*``)."""
    params = inspect.signature(get_spec(name).builder).parameters
    return [p for p in params if p not in ("num_classes", "in_channels")]


def effective_arguments(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Every optional argument of model ``name`` with the value it is built with: the
    given one, else the builder's default (so a missing ``norm`` equals ``norm=batch``)."""
    params = inspect.signature(get_spec(name).builder).parameters
    return {p: args.get(p, params[p].default) for p in model_arguments(name)} | dict(args)


def build_model(name: str, num_classes: int, in_channels: int = 1, **args: Any) -> nn.Module:
    """Build a registered model with freshly initialised weights."""
    spec = get_spec(name)
    valid = model_arguments(name)
    unknown = sorted(set(args) - set(valid))
    if unknown:
        raise UnknownModelError(
            f"model {name!r} does not take argument(s) {unknown} (model.args); "
            f"it takes: {', '.join(valid) or 'none'}"
        )
    return spec.builder(num_classes=num_classes, in_channels=in_channels, **args)


def default_preprocessing(name: str, image_size: int, in_channels: int = 1) -> Preprocessing:
    """The preprocessing a registered model is trained and served with."""
    spec = get_spec(name)
    return Preprocessing(
        image_size=image_size, mean=spec.mean, std=spec.std, in_channels=in_channels
    )


IMAGENET = "imagenet"


def load_pretrained(model: nn.Module, name: str, source: str) -> list[str]:
    """Load pretrained weights into ``model`` from a local file (or, opt-in, from the web).

    ``source`` is a path to a ``state_dict`` file, or ``"imagenet"`` to let torchvision
    download its ImageNet weights (needs internet). RGB first-layer weights are summed
    over colour channels for grayscale input; layers whose shapes differ (the class head)
    are skipped. Returns the names of the skipped parameters.
    """
    if source == IMAGENET:
        state = _download_imagenet_state(name)
    else:
        path = Path(source)
        if not path.is_file():
            raise FileNotFoundError(
                f"model.pretrained_weights={source!r} is not a file; give a local state_dict "
                f"file, '{IMAGENET}' to download (needs internet), or '' for none"
            )
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        state = loaded.get("state_dict", loaded) if isinstance(loaded, dict) else loaded
    own = model.state_dict()
    usable: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, tensor in state.items():
        target = own.get(key)
        if target is None:
            skipped.append(key)
            continue
        if tensor.dim() == 4 and tensor.shape[1] != target.shape[1] and target.shape[1] == 1:
            tensor = tensor.sum(dim=1, keepdim=True)
        if tensor.shape != target.shape:
            skipped.append(key)
            continue
        usable[key] = tensor
    model.load_state_dict(usable, strict=False)
    return skipped


def _download_imagenet_state(name: str) -> dict[str, torch.Tensor]:
    tv_models = torchvision_models()
    getter = getattr(tv_models, name, None)
    if getter is None:
        raise UnknownModelError(f"model {name!r} has no torchvision ImageNet weights")
    try:
        weights = tv_models.get_model_weights(getter).DEFAULT
        return weights.get_state_dict(progress=True)
    except Exception as exc:  # network or cache failure: say what to do instead
        raise RuntimeError(
            f"could not download ImageNet weights for {name!r} ({exc}); on a machine "
            "without internet set model.pretrained_weights to a local state_dict file"
        ) from exc
