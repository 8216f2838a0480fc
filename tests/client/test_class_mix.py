"""A member's personalized model: the global version takes on the member's class mix
when its members trained with balanced softmax (the floor it records), and fine-tuning
trains the classifier layer only unless asked for all of the network."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from flwr.app import ArrayRecord
from torch import nn

from fractofl.client.member import state_as_numpy
from fractofl.client.personal.class_mix import (
    NoClassifierBiasError,
    adopt_class_mix,
    classifier_layer,
    run_floor,
    version_floor,
)
from fractofl.client.personal.local_models import member_trainer, personalize
from fractofl.core.config.run_config import ModelConfig, RegistryConfig, RunConfig, TrainConfig
from fractofl.core.learning.member_data import MemberData, load_member_data
from fractofl.core.model.architectures import build_model
from fractofl.core.model.factory import model_for
from fractofl.core.synth.dataset import member_dir
from fractofl.core.trust.registry import ModelRegistry
from fractofl.core.trust.signing import load_public_key
from fractofl.server.publishing import RoundPublisher
from fractofl.server.recorder import RoundRow
from tests.conftest import run_fractofl

COUNTS = (30, 0, 5, 65)  # one class absent: its frequency is the floor's


def _registry(root: Path) -> RegistryConfig:
    return RegistryConfig(
        root=str(root / "registry"),
        private_key=str(root / "coordinator.key"),
        public_key=str(root / "coordinator.pub"),
        trusted_public_key=str(root / "coordinator.pub"),
        passphrase_env="FRACTOFL_TEST_UNSET_PASSPHRASE",
    )


def _row() -> RoundRow:
    return RoundRow(1, 2, 0.5, 0.5, 0.5, 0.5, 0.5, 0, 0, 1000.0, 1.0)


def _member(easy_dataset: Path, **train: object) -> tuple[RunConfig, MemberData]:
    cfg = RunConfig()
    cfg.data.root = str(easy_dataset)
    cfg.model.image_size = 32
    cfg.train = replace(cfg.train, **train)  # type: ignore[arg-type]
    return cfg, load_member_data(member_dir(easy_dataset, 0), cfg, easy_dataset / "cache")


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("small_cnn", {"width": 8}),
        ("resnet18", {"small_input": True}),
        ("mobilenet_v3_small", {}),
    ],
)
def test_the_class_mix_moves_each_logit_by_the_log_of_its_floored_frequency(
    name: str, args: dict[str, object]
) -> None:
    # Prepare: a network of each family and a batch of images
    torch.manual_seed(0)
    model = build_model(name, num_classes=len(COUNTS), **args).eval()
    images = torch.rand(3, 1, 32, 32)
    with torch.no_grad():
        before = model(images)
        # Execute
        after = adopt_class_mix(model, COUNTS, floor=0.02)(images)
    # Assert: every image's logit of each class moved by log(max(count / total, floor))
    expected = [math.log(max(n / sum(COUNTS), 0.02)) for n in COUNTS]
    assert torch.allclose(after - before, torch.tensor(expected).expand(3, -1), atol=1e-5)


def test_a_network_without_a_final_linear_layer_is_refused() -> None:
    # Prepare: a network whose logits come from a convolution
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    # Execute / Assert
    with pytest.raises(NoClassifierBiasError, match="Sequential does not end in a linear"):
        adopt_class_mix(model, COUNTS, floor=0.01)


def test_a_version_records_the_floor_its_members_trained_with_and_none_without_it(
    tmp_path: Path,
) -> None:
    # Prepare: one coordinator config under each training loss
    plain = replace(
        RunConfig(), registry=_registry(tmp_path), model=ModelConfig(image_size=32, args={})
    )
    balanced = replace(
        plain, train=TrainConfig(loss="balanced_softmax", balanced_softmax_floor=0.05)
    )
    row = _row()
    arrays = ArrayRecord(model_for(plain).state_dict())
    # Execute: a version published by each
    RoundPublisher(balanced, "run-balanced").publish(1, arrays, row)
    RoundPublisher(plain, "run-plain").publish(1, arrays, row)
    # Assert: the signed metadata says which, and the run's own config says the same
    trusted = load_public_key(tmp_path / "coordinator.pub")
    first, second = ModelRegistry(tmp_path / "registry").versions()
    assert version_floor(ModelRegistry(tmp_path / "registry").verify(first.name, trusted)) == 0.05
    assert version_floor(second) is None
    assert run_floor(balanced.train) == 0.05
    assert run_floor(plain.train) is None


def test_fine_tuning_trains_the_classifier_only_and_keeps_the_batchnorm_statistics(
    easy_dataset: Path,
) -> None:
    # Prepare: member 0, a global model, and the member's class counts
    cfg, data = _member(easy_dataset, personalize_epochs=1)
    torch.manual_seed(0)
    model = model_for(cfg)
    start = state_as_numpy(model)
    counts = data.train.class_counts(len(cfg.data.classes))
    head = {f"head.3.{p}" for p in ("weight", "bias")}
    assert {n for n, _ in model.named_parameters()} >= head
    # Execute
    personalize(model, cfg, member_trainer(data, cfg), 3, counts, floor=None)
    # Assert: only the classifier layer moved; every parameter learns again afterwards
    after = state_as_numpy(model)
    changed = {k for k in start if not np.array_equal(start[k], after[k])}
    assert changed == head
    assert all(p.requires_grad for p in model.parameters())
    assert not model.training


def test_fine_tuning_all_layers_moves_the_features_and_their_statistics(
    easy_dataset: Path,
) -> None:
    # Prepare
    cfg, data = _member(easy_dataset, personalize_epochs=1, personalize_layers="all")
    torch.manual_seed(0)
    model = model_for(cfg)
    start = state_as_numpy(model)
    # Execute
    personalize(model, cfg, member_trainer(data, cfg), 3, (1, 1, 1, 1), floor=None)
    # Assert: convolutions and BatchNorm running statistics moved too
    after = state_as_numpy(model)
    changed = {k for k in start if not np.array_equal(start[k], after[k])}
    assert "features.0.weight" in changed
    assert "features.1.running_mean" in changed


def test_with_no_epochs_the_personalized_model_is_the_global_one_with_the_class_mix(
    easy_dataset: Path,
) -> None:
    # Prepare
    cfg, data = _member(easy_dataset, personalize_epochs=0)
    counts = data.train.class_counts(len(cfg.data.classes))
    torch.manual_seed(0)
    start = state_as_numpy(model_for(cfg))

    def personalized(floor: float | None) -> dict[str, np.ndarray]:
        model = model_for(cfg)
        model.load_state_dict({k: torch.from_numpy(v) for k, v in start.items()})
        return state_as_numpy(personalize(model, cfg, member_trainer(data, cfg), 3, counts, floor))

    # Execute
    with_mix, without = personalized(0.01), personalized(None)
    # Assert: the bias moved by the member's log frequencies, nothing else moved
    total = sum(counts)
    offset = np.log([max(n / total, 0.01) for n in counts]).astype(np.float32)
    bias = "head.3.bias"
    np.testing.assert_allclose(with_mix[bias] - start[bias], offset, atol=1e-6)
    assert all(np.array_equal(with_mix[k], start[k]) for k in start if k != bias)
    assert all(np.array_equal(without[k], start[k]) for k in start)


def test_the_classifier_layer_is_the_one_that_gives_the_logits() -> None:
    model = build_model("resnet18", num_classes=4)
    assert classifier_layer(model, 4) is model.fc
    with pytest.raises(NoClassifierBiasError, match="5 outputs"):
        classifier_layer(model, 5)


def test_member_personalize_gives_a_balanced_softmax_version_the_members_class_mix(
    easy_dataset: Path, tmp_path: Path
) -> None:
    # Prepare: a signed global version whose members trained with balanced softmax
    cfg, data = _member(easy_dataset)
    coordinator = replace(
        cfg,
        registry=_registry(tmp_path),
        train=replace(cfg.train, loss="balanced_softmax", balanced_softmax_floor=0.02),
    )
    torch.manual_seed(0)
    global_model = model_for(coordinator)
    RoundPublisher(coordinator, "run-mix").publish(
        1, ArrayRecord(global_model.state_dict()), _row()
    )
    counts = data.train.class_counts(len(cfg.data.classes))
    # Execute: the member personalizes it without fine-tuning
    result = run_fractofl(
        "member",
        "personalize",
        "latest",
        "--data",
        str(member_dir(easy_dataset, 0)),
        f"data.root={easy_dataset}",
        "model.image_size=32",
        "train.personalize_epochs=0",
        f"registry.root={tmp_path / 'registry'}",
        f"registry.trusted_public_key={tmp_path / 'coordinator.pub'}",
        f"deployment.member_dir={tmp_path / 'member'}",
        cwd=tmp_path,
    )
    # Assert: it says so, and the kept model is the global one with the member's log
    # class frequencies (floored at the version's 0.02) added to its classifier's bias
    assert result.returncode == 0, result.stderr[-3000:]
    mix = ", ".join(f"{c} {n}" for c, n in zip(cfg.data.classes, counts, strict=True))
    assert f"class mix: this member's ({mix}; floor 0.02)" in result.stdout
    assert "fine-tuning" not in result.stdout
    private = ModelRegistry(tmp_path / "member" / "models")
    (kept,) = private.versions()
    checkpoint, _ = private.load_verified(
        kept.name, load_public_key(tmp_path / "member" / "models.pub")
    )
    start = state_as_numpy(global_model)
    offset = np.log([max(n / sum(counts), 0.02) for n in counts]).astype(np.float32)
    own = {k: v.numpy() for k, v in checkpoint.state_dict.items()}
    np.testing.assert_allclose(own["head.3.bias"] - start["head.3.bias"], offset, atol=1e-6)
    assert all(np.array_equal(own[k], start[k]) for k in start if k != "head.3.bias")
