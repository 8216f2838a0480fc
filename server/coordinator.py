"""The coordinator's federated run, Flower's ``Strategy.start()`` with our hooks."""

from __future__ import annotations

import logging
import zlib
from pathlib import Path

from flwr.app import ArrayRecord
from flwr.serverapp import Grid

from fractofl.core.compression import CompressionSpec
from fractofl.core.device import seed_everything
from fractofl.core.factory import model_for
from fractofl.core.run_config import RunConfig, config_digest
from fractofl.server.evaluation import CoordinatorEvaluator
from fractofl.server.heap import retain_freed_memory
from fractofl.server.recorder import RoundRecorder
from fractofl.server.run_folder import RunFolder
from fractofl.strategies.registry import CommonStrategyArgs, build_strategy

log = logging.getLogger("fractofl")


class NoRoundCompletedError(RuntimeError):
    """Every round failed: no member update was ever aggregated."""


def run_federated(grid: Grid, cfg: RunConfig, run_id: str) -> Path:
    """Run ``federation.rounds`` rounds and write the run folder; return its path."""
    seed_everything(cfg.seed)
    retain_freed_memory(cfg.updates.retain_freed_mb)
    model = model_for(cfg)
    initial = ArrayRecord(model.state_dict())
    evaluator = CoordinatorEvaluator(cfg, model_for(cfg))
    folder = RunFolder.create(cfg, run_id, kind="federated")
    log.info("run folder %s; coordinator test set: %d images", folder.path, len(evaluator.data))

    recorder: RoundRecorder = RoundRecorder(
        evaluate_global=evaluator.evaluate_arrays,
        on_round=lambda row, _: folder.record_round(recorder.rows, row),
        expected_config_crc=zlib.crc32(config_digest(cfg).encode()),
    )
    fed = cfg.federation
    strategy = build_strategy(
        cfg.strategy.name,
        CommonStrategyArgs(
            fraction_train=fed.fraction_train,
            fraction_evaluate=fed.fraction_evaluate,
            min_train_nodes=fed.min_train_members,
            min_evaluate_nodes=fed.min_evaluate_members,
            min_available_nodes=max(fed.min_train_members, fed.min_evaluate_members),
            train_metrics_aggr_fn=recorder.aggregate_train_metrics,
            evaluate_metrics_aggr_fn=recorder.aggregate_evaluate_metrics,
        ),
        dict(cfg.strategy.args),
        compression=CompressionSpec(cfg.updates.compression, cfg.updates.topk_fraction),
        max_norm_multiple=cfg.updates.max_norm_multiple,
        listener=lambda server_round, verdicts: (
            recorder.record_updates(server_round, verdicts),
            folder.record_updates(server_round, verdicts),
        ),
        statistics_keys=frozenset(name for name, _ in model.named_buffers()),
    )
    result = strategy.start(
        grid=grid,
        initial_arrays=initial,
        num_rounds=fed.rounds,
        timeout=fed.round_timeout,
        evaluate_fn=recorder.evaluate,
    )
    if not result.train_metrics_clientapp:
        raise NoRoundCompletedError(
            f"no round of {fed.rounds} got a usable training reply from any member; "
            "the members' errors are in the log above"
        )
    model.load_state_dict(result.arrays.to_torch_state_dict())
    assert recorder.last_eval is not None  # evaluate_fn ran at least for round 0
    return folder.finish(model, recorder.rows, recorder.last_eval)
