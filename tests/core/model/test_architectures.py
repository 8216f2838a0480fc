"""Model registry: every entry builds, takes grayscale input, and fails loudly."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from fractofl.core.model.architectures import (
    MODEL_REGISTRY,
    UnknownModelError,
    batchnorm_keys,
    build_model,
    default_preprocessing,
    effective_arguments,
    load_pretrained,
    model_arguments,
)
from tests.conftest import fresh_python


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_registered_model_classifies_grayscale_images(name: str) -> None:
    # Prepare
    model = build_model(name, num_classes=4).eval()
    prep = default_preprocessing(name, image_size=64)
    batch = torch.stack([prep.to_tensor(torch.rand(80, 96).numpy()) for _ in range(2)])
    # Execute
    with torch.no_grad():
        logits = model(batch)
    # Assert
    assert batch.shape == (2, 1, 64, 64)
    assert logits.shape == (2, 4)
    assert torch.isfinite(logits).all()


def test_unknown_model_lists_known_names() -> None:
    with pytest.raises(UnknownModelError, match=r"known models: .*resnet18.*small_cnn"):
        build_model("vgg99", num_classes=4)


def test_unknown_argument_lists_valid_ones() -> None:
    assert model_arguments("small_cnn") == ["width", "dropout", "norm", "norm_groups"]
    with pytest.raises(UnknownModelError, match="takes: width, dropout, norm, norm_groups"):
        build_model("small_cnn", num_classes=4, depth=3)


def test_local_pretrained_rgb_weights_are_adapted_to_grayscale(tmp_path: Path) -> None:
    # Prepare: an "RGB ImageNet-like" ResNet-18 state with a 1000-class head.
    from torchvision.models import resnet18

    source = resnet18(weights=None, num_classes=1000)
    path = tmp_path / "rgb.pt"
    torch.save(source.state_dict(), path)
    model = build_model("resnet18", num_classes=4)
    # Execute
    skipped = load_pretrained(model, "resnet18", str(path))
    # Assert: first conv summed over colour channels, head skipped, the rest loaded.
    assert torch.allclose(model.conv1.weight, source.conv1.weight.sum(dim=1, keepdim=True))
    assert set(skipped) == {"fc.weight", "fc.bias"}
    assert torch.equal(model.layer1[0].conv1.weight, source.layer1[0].conv1.weight)


def test_missing_pretrained_file_says_what_to_do(tmp_path: Path) -> None:
    model = build_model("small_cnn", num_classes=4)
    with pytest.raises(FileNotFoundError, match="local state_dict file"):
        load_pretrained(model, "small_cnn", str(tmp_path / "nope.pt"))


@pytest.mark.parametrize("name", sorted(MODEL_REGISTRY))
def test_every_model_has_a_group_norm_variant_without_running_statistics(name: str) -> None:
    # Prepare
    batch = torch.rand(3, 1, 64, 64)
    # Execute
    model = build_model(name, num_classes=4, norm="group").train()
    logits = model(batch)
    # Assert: no BatchNorm, hence nothing a member's images would put in the state
    assert batchnorm_keys(model) == frozenset()
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert not any("running_" in key for key in model.state_dict())
    assert logits.shape == (3, 4)
    assert batchnorm_keys(build_model(name, num_classes=4))  # the default keeps BatchNorm


def test_group_norm_groups_divide_every_layers_channels() -> None:
    # Execute: 5 groups asked for; channels 12, 24, 48, 48
    model = build_model("small_cnn", num_classes=4, width=12, norm="group", norm_groups=5)
    # Assert: the largest divisor of the channel count not above 5
    groups = [m.num_groups for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert groups == [4, 4, 4, 4]


def test_an_unknown_norm_names_the_setting_and_the_choices() -> None:
    with pytest.raises(UnknownModelError, match=r"model.args.norm='layer'.*batch, group"):
        build_model("resnet18", num_classes=4, norm="layer")
    with pytest.raises(UnknownModelError, match=r"model.args.norm_groups=0"):
        build_model("small_cnn", num_classes=4, norm="group", norm_groups=0)


def test_arguments_left_out_count_as_the_builders_defaults() -> None:
    # A checkpoint from before `norm` existed equals one with the default written out.
    assert effective_arguments("small_cnn", {"width": 16}) == effective_arguments(
        "small_cnn", {"width": 16, "norm": "batch", "norm_groups": 8, "dropout": 0.2}
    )
    assert effective_arguments("small_cnn", {})["norm"] == "batch"


def test_torchvision_is_imported_only_when_a_torchvision_network_is_built() -> None:
    # A fresh process: the member's and coordinator's apps with the default small CNN must
    # not pay torchvision's import (it imports torch._dynamo, 1.3 s per process here);
    # building a ResNet then imports it.
    probe = (
        "import sys\n"
        "import fractofl.client.app, fractofl.server.app\n"
        "from fractofl.core.model.architectures import build_model\n"
        "build_model('small_cnn', num_classes=4, width=8)\n"
        "print('torchvision' in sys.modules)\n"
        "build_model('resnet18', num_classes=4)\n"
        "print('torchvision' in sys.modules)\n"
    )
    assert fresh_python(probe) == ["False", "True"]
