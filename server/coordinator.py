"""The coordinator's federated run: new or resumed, checkpointed and published every round."""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fractofl.core.config.run_config import RunConfig, config_crc, config_digest
from fractofl.core.learning.device import seed_everything
from fractofl.core.learning.schedule import round_lr
from fractofl.core.learning.training import EvalResult
from fractofl.core.model.architectures import batchnorm_keys
from fractofl.core.model.factory import model_for
from fractofl.core.trust.registry import VersionMetadata
from fractofl.core.wire.compression import CompressionSpec
from fractofl.core.wire.update_protocol import LEARNING_RATE_KEY
from fractofl.server.audit_trail import CoordinatorAudit, coordinator_audit_path
from fractofl.server.cross_site import cross_site_evaluation
from fractofl.server.errors import NotEnoughMembersError
from fractofl.server.evaluation import CoordinatorEvaluator
from fractofl.server.heap import retain_freed_memory
from fractofl.server.member_evaluation import member_label
from fractofl.server.member_registry import member_names
from fractofl.server.progress import RoundProgress
from fractofl.server.publishing import RoundPublisher
from fractofl.server.recorder import RoundRecorder, RoundRow
from fractofl.server.replies_in_time import send_and_receive
from fractofl.server.round_state import (
    RandomState,
    RoundState,
    load_round_state,
    save_round_state,
)
from fractofl.server.rounds import Exchange, Participation, RoundPolicy, run_rounds
from fractofl.server.run_folder import RunFolder
from fractofl.server.secure_exchange import SecureExchange
from fractofl.server.streamed_exchange import StreamedExchange
from fractofl.strategies.aggregation_mode import streams_updates
from fractofl.strategies.guard import UpdateGuard, UpdateVerdict
from fractofl.strategies.npy_arrays import array_of
from fractofl.strategies.privacy import DifferentialPrivacy, check_dp_settings, rdp_accountant
from fractofl.strategies.registry import CommonStrategyArgs, build_strategy
from fractofl.strategies.secure_aggregation import check_secagg_settings
from fractofl.strategies.spill import SpillSpaceError, UpdateSpill
from fractofl.strategies.state import restore_strategy_state, strategy_state

log = logging.getLogger("fractofl")


class NoRoundCompletedError(RuntimeError):
    """Every round failed: no member update was ever aggregated."""


@dataclass
class _Start:
    """Where a run begins: a fresh folder at round 1, or a checkpoint's next round."""

    folder: RunFolder
    arrays: ArrayRecord
    run_id: str
    state: RoundState | None


def evaluates_with_training(cfg: RunConfig) -> bool:
    """Whether members score each round's model in the next round's training reply
    (``federation.evaluate_with_training``). Not under secure aggregation, whose replies
    carry masked sums only, nor when members are sampled (``fraction_train`` or
    ``fraction_evaluate`` below 1), where the members asked to train are not the ones
    asked to evaluate; the log says why."""
    fed = cfg.federation
    if not fed.evaluate_with_training:
        return False
    reason = ""
    if cfg.privacy.secure_aggregation:
        reason = "privacy.secure_aggregation is on"
    elif fed.fraction_train < 1 or fed.fraction_evaluate < 1:
        reason = (
            f"members are sampled (federation.fraction_train={fed.fraction_train}, "
            f"fraction_evaluate={fed.fraction_evaluate})"
        )
    if reason:
        log.info(
            "federation.evaluate_with_training: members evaluate in an exchange of their own "
            "after each round, because %s",
            reason,
        )
        return False
    return True


def warn_of_a_reference_set_members_do_not_read(cfg: RunConfig) -> None:
    """A deployed run's ``data.reference_dir`` reaches no member: say where it belongs."""
    if cfg.data.reference_dir and cfg.output.engine == "deployment":
        log.warning(
            "data.reference_dir=%s is for simulated members: a real member trains with its own "
            "copy of the reference set, which it passes to `member join --reference` (the log "
            "says which copy the members trained with)",
            cfg.data.reference_dir,
        )


def _start(cfg: RunConfig, run_id: str, initial: ArrayRecord) -> _Start:
    if not cfg.output.resume:
        return _Start(RunFolder.create(cfg, run_id, kind="federated"), initial, run_id, None)
    folder = RunFolder.reopen(cfg, run_id, kind="federated")
    state = load_round_state(folder.path)
    folder.rewind(state.rows)
    folder.run_id = state.run_id
    arrays = ArrayRecord({key: array_of(value) for key, value in state.arrays.items()})
    log.info(
        "resuming run %s in %s after round %d of %d",
        state.run_id,
        folder.path,
        state.round,
        cfg.federation.rounds,
    )
    return _Start(folder, arrays, state.run_id, state)


def _strategy(
    cfg: RunConfig, recorder: RoundRecorder, folder: RunFolder, buffers: frozenset[str]
) -> UpdateGuard:
    fed = cfg.federation
    return build_strategy(
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
        statistics_keys=buffers,
    )


@dataclass
class _RunAudit:
    """A deployed run's entries in the coordinator's audit trail, with the update guard's
    verdicts of the round (each with the SHA-256 of the update as received)."""

    trail: CoordinatorAudit
    verdicts: list[UpdateVerdict]

    def round_ended(
        self, run_id: str, server_round: int, seen: Participation, meta: VersionMetadata
    ) -> None:
        updates = [
            {
                "member": self.trail.member(v.node_id),
                "bytes": v.bytes_sent,
                "sha256": v.sha256,
                "accepted": v.accepted,
                **({"refused": v.reason} if not v.accepted else {}),
            }
            for v in self.verdicts
        ]
        self.trail.round_done(
            run_id, server_round, seen.sampled, seen.answered, seen.failed, seen.stragglers, updates
        )
        self.trail.published(run_id, server_round, meta.version, meta.weights_sha256)


@contextmanager
def _audited(audit: _RunAudit | None, run_id: str, recorder: RoundRecorder) -> Iterator[None]:
    """The run's end in the audit trail: finished, or stopped and why."""
    try:
        yield
    except BaseException as exc:
        if audit is not None:
            done = recorder.rows[-1].round if recorder.rows else 0
            audit.trail.run_ended(run_id, f"stopped: {exc}"[:500], done)
        raise
    if audit is not None:
        audit.trail.run_ended(run_id, "finished", recorder.rows[-1].round if recorder.rows else 0)


def _audit_trail(cfg: RunConfig, folder: RunFolder, guard: UpdateGuard) -> _RunAudit | None:
    """A deployed run's audit (``deployment.state_dir/audit.log``); None in simulation."""
    if cfg.output.engine != "deployment":
        return None
    audit = _RunAudit(CoordinatorAudit(coordinator_audit_path(cfg), folder.member_names), [])
    guard.update_digests = True
    listener = guard.listener

    def keep_verdicts(server_round: int, verdicts: list[UpdateVerdict]) -> None:
        audit.verdicts[:] = verdicts
        if listener is not None:
            listener(server_round, verdicts)

    guard.listener = keep_verdicts
    return audit


def spill_folder(cfg: RunConfig, run_dir: Path) -> Path:
    """Where streamed updates wait for the round's norm test (``updates.spill_dir``, by
    default the run folder's ``spill``, present only while a round collects updates)."""
    return Path(cfg.updates.spill_dir) if cfg.updates.spill_dir else run_dir / "spill"


def _private(cfg: RunConfig, guard: UpdateGuard) -> DifferentialPrivacy:
    """The guard behind member-side clipping, noise and Flower's RDP accountant."""
    settings = cfg.privacy
    check_dp_settings(cfg)
    accountant = rdp_accountant(cfg.federation.members, settings.target_delta, settings.max_epsilon)
    return DifferentialPrivacy(guard, settings.noise_multiplier, settings.clipping_norm, accountant)


def scheduled_lr(cfg: RunConfig, server_round: int) -> ConfigRecord:
    """The round's learning rate for the members under ``train.lr_schedule`` (nothing
    under ``constant``: members train with ``train.lr``)."""
    if cfg.train.lr_schedule == "constant":
        return ConfigRecord()
    lr = round_lr(cfg.train, server_round, cfg.federation.rounds)
    log.info("round %d: learning rate %.4g (train.lr_schedule)", server_round, lr)
    return ConfigRecord({LEARNING_RATE_KEY: lr})


def run_federated(grid: Grid, cfg: RunConfig, run_id: str) -> Path:
    """Run (or, with ``output.resume``, continue) ``federation.rounds`` rounds; after each
    completed round checkpoint the run and publish the global model as a signed version.
    Returns the final model's path in the run folder."""
    seed_everything(cfg.seed)
    retain_freed_memory(cfg.updates.retain_freed_mb)
    model = model_for(cfg)
    start = _start(cfg, run_id, ArrayRecord(model.state_dict()))
    folder, state = start.folder, start.state
    folder.member_names = member_names(cfg.deployment)
    evaluator = CoordinatorEvaluator(cfg, model_for(cfg))
    log.info("run folder %s; coordinator test set: %d images", folder.path, len(evaluator.data))
    if cfg.strategy.local_batchnorm:
        log.warning(
            "strategy.local_batchnorm (FedBN): members keep their own BatchNorm layers, so the "
            "coordinator's copy keeps its initial ones; its test scores and published versions "
            "are not a model to serve as they are. Each member's scores, with its own "
            "BatchNorm, are in member_eval.csv"
        )
        if not batchnorm_keys(model):
            log.warning(
                "strategy.local_batchnorm: model %s has no BatchNorm layers (model.args.norm="
                "%s), so members keep nothing local and this is plain %s",
                cfg.model.name,
                cfg.model.args.get("norm", "batch"),
                cfg.strategy.name,
            )
    warn_of_a_reference_set_members_do_not_read(cfg)
    fed = cfg.federation
    progress = RoundProgress(fed.rounds, done=state.round if state else 0)

    def on_round(row: RoundRow, _: EvalResult) -> None:
        folder.record_round(recorder.rows, row)
        progress.round_done(row)

    private: DifferentialPrivacy | None = None
    recorder = RoundRecorder(
        evaluate_global=evaluator.evaluate_arrays,
        on_round=on_round,
        expected_config_crc=config_crc(cfg),
        rows=state.rows if state else None,
    )
    buffers = frozenset(name for name, _ in model.named_buffers())
    guard = _strategy(cfg, recorder, folder, buffers)
    strategy: Strategy = guard
    if cfg.privacy.dp:
        strategy = private = _private(cfg, guard)
        recorder.privacy_spent = private.privacy_spent
    exchange: Exchange = send_and_receive
    if cfg.privacy.secure_aggregation:
        check_secagg_settings(cfg)
        exchange = SecureExchange.from_config(cfg.privacy)
        exchange.summary()
    elif streams_updates(cfg):
        guard.spill = UpdateSpill(spill_folder(cfg, folder.path), cfg.updates.spill_min_free_mb)
        exchange = StreamedExchange(guard)
    publisher = RoundPublisher(cfg, start.run_id, evaluator.calibration_of)
    audit = _audit_trail(cfg, folder, guard)
    if state is not None:
        if private is not None and state.privacy:
            private.accountant.load_state_dict(json.loads(state.privacy))
        restore_strategy_state(strategy, state.strategy)
        state.random_state.restore()
        publisher.ensure_published(state.round, start.arrays, state.rows[-1])

    def on_participation(seen: Participation) -> None:
        recorder.record_participation(seen)
        folder.record_participation(seen)

    def on_round_end(server_round: int, arrays: ArrayRecord, participation: Participation) -> None:
        # The checkpoint is the commit point of a round; publishing comes after it and is
        # redone on resume if the coordinator stopped in between.
        save_round_state(
            RoundState(
                round=server_round,
                run_id=start.run_id,
                config_digest=config_digest(cfg),
                arrays={key: array.numpy() for key, array in arrays.items()},
                rows=list(recorder.rows),
                random_state=RandomState.capture(),
                strategy=strategy_state(strategy),
                elapsed_s=recorder.elapsed_s(),
                privacy=json.dumps(private.accountant.state_dict()) if private else "",
            ),
            folder.path,
        )
        names = folder.known_names()
        contributors = [member_label(node, names, None) for node in recorder.contributors]
        meta = publisher.publish(server_round, arrays, recorder.rows[-1], contributors)
        if audit is not None:
            audit.round_ended(start.run_id, server_round, participation, meta)

    first = state.round + 1 if state else 1
    if audit is not None:
        audit.trail.run_started(cfg, start.run_id, first, folder.path)
    with _audited(audit, start.run_id, recorder):
        try:
            final = run_rounds(
                strategy,
                grid,
                start.arrays,
                range(first, fed.rounds + 1),
                RoundPolicy(
                    timeout_s=fed.round_timeout,
                    retries=fed.round_retries,
                    min_train_members=fed.min_train_members,
                    min_available_members=max(fed.min_train_members, fed.min_evaluate_members),
                    exchange=exchange,
                    names=folder.member_names,
                    round_config=functools.partial(scheduled_lr, cfg),
                    evaluate_with_training=evaluates_with_training(cfg),
                ),
                evaluate_fn=recorder.evaluate,
                on_participation=on_participation,
                on_round_end=on_round_end,
                on_member_evaluation=folder.record_member_evaluations,
                score_ahead=lambda arrays: evaluator.scored(arrays.to_torch_state_dict()),
                on_timings=recorder.record_timings,
            )
        except NotEnoughMembersError as exc:
            done = recorder.rows[-1].round if recorder.rows else 0
            then = (
                f"the run stopped after round {done}; `fractofl coordinator resume {folder.path}` "
                "continues it when enough members are back"
                if done
                else "no round completed; start the run again when enough members are connected"
            )
            raise NotEnoughMembersError(f"{exc}. {then[0].upper()}{then[1:]}") from None
        except SpillSpaceError as exc:
            raise SpillSpaceError(
                f"{exc}: `fractofl coordinator resume {folder.path}` continues it"
            ) from None
        finally:
            progress.close()
    if not any(row.members_answered for row in recorder.rows):
        raise NoRoundCompletedError(
            f"no round of {fed.rounds} got a usable training reply from any member; "
            "the members' errors are in the log above"
        )
    if fed.cross_site:
        cells = cross_site_evaluation(
            grid, final, fed.round_timeout, folder.known_names(), len(cfg.data.classes)
        )
        folder.record_cross_site(cells)
    model.load_state_dict(final.to_torch_state_dict())
    last = recorder.last_eval or evaluator.evaluate_arrays(final)
    return folder.finish(model, recorder.rows, last)
