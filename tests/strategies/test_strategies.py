"""Every registered strategy, behind the update guard, against Flower's own result."""

from __future__ import annotations

import numpy as np
import pytest
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp.strategy import (
    Bulyan,
    FedAdagrad,
    FedAdam,
    FedAvg,
    FedAvgM,
    FedMedian,
    FedProx,
    FedTrimmedAvg,
    FedYogi,
    Krum,
    MultiKrum,
    Strategy,
)
from flwr.serverapp.strategy.strategy_utils import aggregate_metricrecords

from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.strategies.registry import (
    STRATEGY_REGISTRY,
    CommonStrategyArgs,
    UnknownStrategyError,
    build_strategy,
    strategy_arguments,
)
from tests.strategies.flower_grid import grid_with_nodes

MEMBERS = 5
EXAMPLES = [10, 20, 30, 40, 50]

# Flower's class and the arguments our config gives it by default.
FLOWER_EQUIVALENT: dict[str, tuple[type[Strategy], dict[str, float]]] = {
    "fedavg": (FedAvg, {}),
    "fedavgm": (FedAvgM, {"server_learning_rate": 1.0, "server_momentum": 0.5}),
    "fedprox": (FedProx, {"proximal_mu": 0.001}),
    "fedadam": (FedAdam, {"eta": 0.01, "eta_l": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    "fedyogi": (FedYogi, {"eta": 0.01, "eta_l": 0.05, "beta_1": 0.9, "beta_2": 0.99, "tau": 1e-3}),
    "fedadagrad": (FedAdagrad, {"eta": 0.01, "eta_l": 0.05, "tau": 1e-3}),
    "fedmedian": (FedMedian, {}),
    "fedtrimmedavg": (FedTrimmedAvg, {"beta": 0.2}),
    "krum": (Krum, {"num_malicious_nodes": 1}),
    "multikrum": (MultiKrum, {"num_malicious_nodes": 1, "num_nodes_to_select": 3}),
    "bulyan": (Bulyan, {"num_malicious_nodes": 0}),
}


def common_args() -> CommonStrategyArgs:
    return CommonStrategyArgs(
        fraction_train=1.0,
        fraction_evaluate=1.0,
        min_train_nodes=MEMBERS,
        min_evaluate_nodes=MEMBERS,
        min_available_nodes=MEMBERS,
        train_metrics_aggr_fn=aggregate_metricrecords,
        evaluate_metrics_aggr_fn=aggregate_metricrecords,
    )


def global_model() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "conv.weight": rng.normal(size=(4, 1, 3, 3)).astype(np.float32),
        "conv.bias": rng.normal(size=(4,)).astype(np.float32),
        "bn.running_var": np.ones(4, dtype=np.float32),
        "bn.num_batches_tracked": np.array(7, dtype=np.int64),
    }


def member_deltas() -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(1)
    return [
        {
            "conv.weight": rng.normal(0, 0.1, (4, 1, 3, 3)).astype(np.float32),
            "conv.bias": rng.normal(0, 0.1, (4,)).astype(np.float32),
            "bn.running_var": rng.normal(0, 0.1, (4,)).astype(np.float32),
            "bn.num_batches_tracked": np.array(3, dtype=np.int64),
        }
        for _ in range(MEMBERS)
    ]


def replies(instructions: list[Message], payloads: list[dict[str, np.ndarray]]) -> list[Message]:
    """Each node's reply to its instruction, carrying ``payload`` and its example count."""
    by_node = sorted(instructions, key=lambda m: m.metadata.dst_node_id)
    return [
        Message(
            content=RecordDict(
                {
                    "arrays": ArrayRecord({k: Array(np.asarray(v)) for k, v in payload.items()}),
                    "metrics": MetricRecord({"num-examples": examples}),
                }
            ),
            reply_to=instruction,
        )
        for instruction, payload, examples in zip(by_node, payloads, EXAMPLES, strict=True)
    ]


def run_round(
    strategy: Strategy,
    payloads: list[dict[str, np.ndarray]],
    server_round: int = 1,
    start: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, np.ndarray], list[Message]]:
    """One round on a fresh grid from ``start`` (the global model by default)."""
    grid, _ = grid_with_nodes(MEMBERS)
    arrays = global_model() if start is None else start
    record = ArrayRecord({k: Array(v) for k, v in arrays.items()})
    instructions = list(strategy.configure_train(server_round, record, ConfigRecord(), grid))
    messages = replies(instructions, payloads)
    result, _ = strategy.aggregate_train(server_round, messages)
    assert result is not None
    return {k: a.numpy() for k, a in result.items()}, instructions


def weighted_mean_delta(deltas: list[dict[str, np.ndarray]], key: str) -> np.ndarray:
    """The example-weighted mean of the members' ``key`` deltas (EXAMPLES are the weights)."""
    weights = np.array(EXAMPLES, dtype=np.float64) / sum(EXAMPLES)
    return np.tensordot(weights, np.stack([d[key] for d in deltas]), 1)


def test_every_registered_strategy_has_a_flower_equivalent_and_a_config() -> None:
    from pathlib import Path

    conf = Path(__file__).resolve().parents[2] / "conf" / "strategy"
    assert set(STRATEGY_REGISTRY) == set(FLOWER_EQUIVALENT)
    assert {p.stem for p in conf.glob("*.yaml")} == set(STRATEGY_REGISTRY)


@pytest.mark.parametrize("name", sorted(STRATEGY_REGISTRY))
def test_strategy_matches_flower_on_the_same_updates(name: str) -> None:
    # Prepare: members send deltas (uncompressed); Flower's class gets the full weights.
    reference = global_model()
    deltas = member_deltas()
    weights = [{k: reference[k] + d[k] for k in reference} for d in deltas]
    ours = build_strategy(name, common_args(), {}, CompressionSpec("none"), max_norm_multiple=100)
    cls, args = FLOWER_EQUIVALENT[name]
    theirs = cls(**common_args().flower_kwargs(), **args)
    # Execute
    got, _ = run_round(ours, [encode_update(d, CompressionSpec("none")) for d in deltas])
    expected, _ = run_round(theirs, weights)
    # Assert: same aggregate; integer buffers keep the model's dtype (Flower returns the
    # counter as a float, e.g. 7.05 after a server Adam step: we round it).
    assert set(got) == set(expected)
    for key in ("conv.weight", "conv.bias", "bn.running_var"):
        np.testing.assert_allclose(got[key], expected[key], rtol=1e-6, atol=1e-6)
    counter = got["bn.num_batches_tracked"]
    assert counter.dtype == np.int64
    assert counter == np.rint(expected["bn.num_batches_tracked"])


def test_fedavg_and_fedmedian_give_the_known_answers() -> None:
    reference, deltas = global_model(), member_deltas()
    spec = CompressionSpec("none")
    payloads = [encode_update(d, spec) for d in deltas]
    avg, _ = run_round(build_strategy("fedavg", common_args(), {}, spec, 100), payloads)
    med, _ = run_round(build_strategy("fedmedian", common_args(), {}, spec, 100), payloads)
    weights = np.array(EXAMPLES, dtype=np.float64) / sum(EXAMPLES)
    stacked = np.stack([reference["conv.weight"] + d["conv.weight"] for d in deltas])
    np.testing.assert_allclose(avg["conv.weight"], np.tensordot(weights, stacked, 1), atol=1e-6)
    np.testing.assert_allclose(med["conv.weight"], np.median(stacked, axis=0), atol=1e-6)


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("fedadam", {}),
        ("fedyogi", {}),
        ("fedadagrad", {}),
        # FedAvgM's first step at a server rate of 1 is the mean itself.
        ("fedavgm", {"server_learning_rate": 2.0}),
    ],
)
def test_server_optimisers_average_running_statistics(name: str, args: dict[str, float]) -> None:
    # Prepare
    spec = CompressionSpec("none")
    deltas = member_deltas()
    payloads = [encode_update(d, spec) for d in deltas]
    plain = build_strategy(name, common_args(), args, spec, 100)
    keyed = build_strategy(
        name, common_args(), args, spec, 100, statistics_keys=frozenset({"bn.running_var"})
    )
    # Execute
    optimised, _ = run_round(plain, payloads)
    averaged, _ = run_round(keyed, [encode_update(d, spec) for d in deltas])
    # Assert: the running variance is the weighted mean; the weights still get the step.
    mean_var = 1.0 + weighted_mean_delta(deltas, "bn.running_var")
    np.testing.assert_allclose(averaged["bn.running_var"], mean_var, atol=1e-6)
    assert not np.allclose(optimised["bn.running_var"], mean_var, atol=1e-4)
    np.testing.assert_allclose(averaged["conv.weight"], optimised["conv.weight"], atol=1e-7)


def test_fedprox_sends_mu_and_guard_sends_compression() -> None:
    spec = CompressionSpec("int8", topk_fraction=0.5)
    strategy = build_strategy("fedprox", common_args(), {"proximal_mu": 0.3}, spec, 5.0)
    grid, _ = grid_with_nodes(MEMBERS)
    start = ArrayRecord({k: Array(v) for k, v in global_model().items()})
    instruction = next(iter(strategy.configure_train(1, start, ConfigRecord(), grid)))
    config = instruction.content.config_records["config"]
    assert config["proximal-mu"] == pytest.approx(0.3)
    assert config["compression-mode"] == "int8"
    assert config["compression-topk"] == pytest.approx(0.5)


def test_unknown_strategy_and_argument_list_the_valid_ones() -> None:
    with pytest.raises(UnknownStrategyError, match="known strategies: bulyan, fedadagrad"):
        build_strategy("fedsgd", common_args(), {}, CompressionSpec(), 5.0)
    with pytest.raises(UnknownStrategyError, match="it takes: beta"):
        build_strategy("fedtrimmedavg", common_args(), {"gamma": 1}, CompressionSpec(), 5.0)
    assert strategy_arguments("multikrum") == ["num_malicious_nodes", "num_nodes_to_select"]
