"""Differential privacy: member-side clipping, the coordinator's noise and Flower's
RDP accountant, driven through a real Flower Grid."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.supercore.differential_privacy import KEY_CLIPPING_NORM

from fractofl.client.member import clip_update
from fractofl.core.config.run_config import from_nested
from fractofl.core.wire.compression import CompressionSpec
from fractofl.core.wire.update_protocol import CLIPPING_NORM_KEY, UNIT_WEIGHT_KEY
from fractofl.strategies.privacy import (
    DifferentialPrivacy,
    PrivacyBudgetExhaustedError,
    PrivacySettingsError,
    check_dp_settings,
    rdp_accountant,
)
from fractofl.strategies.registry import build_strategy
from tests.strategies.flower_grid import grid_with_nodes
from tests.strategies.test_strategies import common_args

MEMBERS = 5
SIZE = 20_000


def private_fedavg(noise: float, clip: float, max_epsilon: float = 0.0) -> DifferentialPrivacy:
    guard = build_strategy(
        "fedavg", common_args(), {}, CompressionSpec("none"), max_norm_multiple=100
    )
    return DifferentialPrivacy(guard, noise, clip, rdp_accountant(MEMBERS, 1e-5, max_epsilon))


def model() -> dict[str, np.ndarray]:
    return {
        "w": np.zeros(SIZE, np.float32),
        "bn.running_var": np.full(SIZE, 0.01, np.float32),
        "bn.num_batches_tracked": np.array(3, np.int64),
    }


def one_round(
    strategy: DifferentialPrivacy, deltas: list[dict[str, np.ndarray]], server_round: int = 1
) -> tuple[dict[str, np.ndarray], list[Message]]:
    grid, _ = grid_with_nodes(MEMBERS)
    start = ArrayRecord({k: Array(v) for k, v in model().items()})
    instructions = list(strategy.configure_train(server_round, start, ConfigRecord(), grid))
    replies = [
        Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in delta.items()}),
                    "metrics": MetricRecord({"num-examples": 10 * (i + 1), UNIT_WEIGHT_KEY: 1}),
                }
            ),
            reply_to=instruction,
        )
        for i, (instruction, delta) in enumerate(zip(instructions, deltas, strict=True))
    ]
    arrays, _ = strategy.aggregate_train(server_round, replies)
    assert arrays is not None
    return {k: a.numpy() for k, a in arrays.items()}, instructions


def zero_deltas() -> list[dict[str, np.ndarray]]:
    return [{k: np.zeros_like(v) for k, v in model().items()} for _ in range(MEMBERS)]


def test_members_clip_to_the_norm_and_send_no_counter_change() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    big = {"w": rng.normal(0, 1, 1000).astype(np.float32), "n": np.array(5, np.int64)}
    small = {"w": np.full(4, 0.01, np.float32)}
    # Execute
    norm_before = clip_update(big, 2.0)
    clip_update(small, 2.0)
    # Assert
    assert norm_before > 20
    assert np.linalg.norm(big["w"]) == pytest.approx(2.0, rel=1e-5)
    assert int(big["n"]) == 0
    assert np.array_equal(small["w"], np.full(4, 0.01, np.float32))  # inside the ball: unchanged
    assert clip_update({"w": np.zeros(3, np.float32)}, 1.0) == 0.0  # no division by zero


def test_the_noise_has_the_calibrated_spread_and_the_mean_is_unweighted() -> None:
    # Prepare: member i sends i + 1 in the first element, with 10 (i + 1) examples
    np.random.seed(0)
    strategy = private_fedavg(noise=0.05, clip=10.0)
    deltas = zero_deltas()
    for i, delta in enumerate(deltas):
        delta["w"][0] = i + 1.0
    # Execute
    released, instructions = one_round(strategy, deltas)
    # Assert: clipping norm sent under Flower's key; noise std z * C / n; unit weights
    config = instructions[0].content.config_records["config"]
    assert CLIPPING_NORM_KEY == KEY_CLIPPING_NORM and config[CLIPPING_NORM_KEY] == 10.0
    expected_std = 0.05 * 10.0 / MEMBERS
    assert np.std(released["w"][1:]) == pytest.approx(expected_std, rel=0.05)
    assert released["w"][0] == pytest.approx(3.0, abs=5 * expected_std)  # weighted: 3.67
    assert released["bn.running_var"].min() >= 0.0  # clamped after the noise
    assert (released["bn.running_var"] == 0.0).any()
    assert int(released["bn.num_batches_tracked"]) == 3  # integers get no noise


def test_the_accountant_reports_epsilon_after_every_round_and_stops_at_the_budget() -> None:
    # Prepare: z = 1, 5 members, delta 1e-5 (flower-notes: 4.73 after one such release)
    strategy = private_fedavg(noise=1.0, clip=1.0, max_epsilon=8.0)
    # Execute
    epsilons = []
    for server_round in (1, 2):
        one_round(strategy, zero_deltas(), server_round)
        epsilons.append(strategy.privacy_spent().epsilon)
    # Assert
    assert epsilons[0] == pytest.approx(4.73, abs=0.01)
    assert epsilons[0] < epsilons[1] < 8.0
    assert strategy.privacy_spent().releases == 2
    with pytest.raises(PrivacyBudgetExhaustedError, match=r"privacy.max_epsilon=8"):
        one_round(strategy, zero_deltas(), 3)


def test_an_update_that_was_not_clipped_is_refused_and_the_noise_follows_n() -> None:
    # Prepare: member 0 sends norm 10 with a clipping norm of 1; the others send nothing
    np.random.seed(1)
    strategy = private_fedavg(noise=1.0, clip=1.0)
    deltas = zero_deltas()
    deltas[0]["w"][:100] = 1.0
    # Execute
    released, _ = one_round(strategy, deltas)
    # Assert: 4 updates averaged, noise std z * C / 4
    assert strategy.inner.accepted_count == MEMBERS - 1
    assert np.std(released["w"]) == pytest.approx(1.0 / (MEMBERS - 1), rel=0.05)
    assert abs(released["w"][:100].mean()) < 0.1  # the unclipped update is not in the mean


@pytest.mark.parametrize(
    ("strategy", "compression", "noise", "match"),
    [
        ("krum", "none", 1.0, "strategy='krum'"),
        ("fedadam", "none", 1.0, "strategy='fedadam'"),
        ("fedavg", "int8", 1.0, "updates.compression=none"),
        ("fedavg", "none", 0.0, "privacy.noise_multiplier=0.0"),
    ],
)
def test_settings_dp_cannot_honour_are_refused(
    strategy: str, compression: str, noise: float, match: str
) -> None:
    with pytest.raises(PrivacySettingsError, match=match):
        check_dp_settings(
            from_nested(
                {
                    "strategy": {"name": strategy},
                    "updates": {"compression": compression},
                    "privacy": {"noise_multiplier": noise, "clipping_norm": 1.0},
                }
            )
        )
