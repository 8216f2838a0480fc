"""A wrapper that screens member updates before any strategy aggregates them.

Members reply with a compressed *delta* (see :mod:`fractofl.core.wire.compression`). The guard
remembers the global arrays it sent, decodes each delta, refuses malformed, non-finite and
outlying updates (:mod:`fractofl.strategies.validation`), and hands the accepted ones, as
full weights, to the wrapped Flower strategy, which aggregates them as it always does.
A refused member is logged with its node id, the round and the reason; the round goes on.
The wrapper pattern is Flower's own (its differential-privacy strategies wrap another
strategy the same way), so ``Strategy.start()`` is used unchanged.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedAvgM, FedProx, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fractofl.core.wire.compression import CompressionError, CompressionSpec, decode_update
from fractofl.core.wire.update_protocol import EVALUATION_KEY, EXAMPLES_KEY, spec_to_config
from fractofl.strategies.mean import RunningMean, update_shares
from fractofl.strategies.npy_arrays import array_of, array_view
from fractofl.strategies.replies import reply_senders
from fractofl.strategies.spill import SpilledUpdate, UpdateSpill
from fractofl.strategies.validation import (
    measure_update,
    norm_outliers,
    statistics_problem,
    structural_problem,
    update_norm,
)
from fractofl.strategies.wrapping import WrappingStrategy

log = logging.getLogger("fractofl")


@dataclass(frozen=True)
class UpdateVerdict:
    """What happened to one member's update in one round."""

    node_id: int
    bytes_sent: int
    accepted: bool
    reason: str = ""
    norm: float = float("nan")
    sha256: str = ""
    """Of the update's bytes as received (when the guard's ``update_digests`` is on)."""


ScreenListener = Callable[[int, list[UpdateVerdict]], None]

# Strategies whose aggregate is exactly the weighted mean of the member weights.
PLAIN_MEANS = (FedAvg, FedProx)
# Strategies that take an optimiser step on the server from that mean.
ServerOptimiser = FedOpt | FedAvgM


def steps_from_the_mean(strategy: Strategy) -> bool:
    """Whether ``strategy`` is a server optimiser (FedAdam, FedYogi, FedAdagrad, FedAvgM):
    a step from the weighted mean of the updates."""
    return isinstance(strategy, ServerOptimiser)


def aggregates_a_mean(strategy: Strategy) -> bool:
    """Whether ``strategy`` only needs the weighted mean of the updates (FedAvg, FedProx,
    and the server optimisers, which step from that mean), so the guard can fold updates in
    one at a time (streaming aggregation)."""
    return type(strategy) in PLAIN_MEANS or steps_from_the_mean(strategy)


@dataclass
class _Candidate:
    """A reply that passed the per-update checks, waiting for the round's norm test."""

    msg: Message
    node: int
    sent: int
    weight: float
    norm: float
    order: bytes
    digest: str = ""
    delta: dict[str, np.ndarray] | None = None
    """The decoded update, when it is kept in memory (``updates.aggregation=gathered``)."""
    spilled: SpilledUpdate | None = None
    """Where its bytes are, when streamed (the reply then carries only its metrics)."""


CLIPPING_TOLERANCE = 1.0 + 1e-3  # float32 rounding of a clipped update's norm


def _training_metrics(content: RecordDict) -> list[MetricRecord]:
    """A training reply's metric records, without the member's scores of the model it
    received (``federation.evaluate_with_training``), which the round loop takes out
    after the exchange and which say nothing about the update."""
    return [record for name, record in content.metric_records.items() if name != EVALUATION_KEY]


def _weight(content: RecordDict, key: str) -> float:
    """The positive weight (``key``, e.g. ``EXAMPLES_KEY``) a reply carries, or ValueError."""
    records = _training_metrics(content)
    value = records[0].get(key) if len(records) == 1 else None
    if not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"the reply needs one MetricRecord with a positive '{key}'")
    return float(value)


def _update_digest(msg: Message) -> str:
    """SHA-256 of every array's bytes of a reply, in order: what the member's audit log
    records as the reply's ``arrays_sha256``."""
    digest = hashlib.sha256()
    for record in msg.content.array_records.values():
        for array in record.values():
            digest.update(array.data)
    return digest.hexdigest()


CONTENT_ORDER_BYTES = 64  # per array, for the aggregation order


def _content_order(msg: Message) -> bytes:
    """A sort key that depends on what a reply holds, not on who sent it.

    Floating-point sums depend on their order, and Flower's node ids (and so the reply
    order) differ from run to run; aggregating in content order makes two runs with the
    same seed and the same member updates produce the same bits.
    """
    digest = hashlib.blake2b(digest_size=16)
    for arrays in msg.content.array_records.values():
        for key, array in arrays.items():
            digest.update(key.encode())
            # The last bytes of every array are values (the .npy header comes first):
            # enough to tell different members' updates apart, cheap for large ones.
            digest.update(array.data[-CONTENT_ORDER_BYTES:])
    for metrics in _training_metrics(msg.content):
        digest.update(repr(sorted(metrics.items())).encode())
    return digest.digest()


@contextmanager
def _metrics_aggregation_off(strategy: FedAvg) -> Iterator[None]:
    """``strategy`` without its train-metrics aggregation (whose function records the
    round's metrics: the guard aggregates them from the real replies itself)."""
    own = strategy.train_metrics_aggr_fn
    strategy.train_metrics_aggr_fn = lambda _contents, _key: MetricRecord()
    try:
        yield
    finally:
        strategy.train_metrics_aggr_fn = own


class UpdateGuard(WrappingStrategy):
    """Decode, validate and filter member updates, then delegate to ``inner``.

    Replies reach it in one of two ways. Gathered (``replies_in_time.send_and_receive``): the
    round's replies arrive together in :meth:`aggregate_train`. Streamed
    (:attr:`spill` set): the exchange hands each reply to :meth:`receive` as it arrives,
    which screens it, writes its bytes to the spill and returns the reply without its
    arrays; :meth:`aggregate_train` then applies the round's norm test and folds the
    accepted updates into the mean one at a time, in the same order and with the same
    arithmetic as the gathered path, so both give the same bits.
    """

    def __init__(
        self,
        inner: Strategy,
        compression: CompressionSpec,
        max_norm_multiple: float,
        listener: ScreenListener | None = None,
        statistics_keys: frozenset[str] = frozenset(),
    ) -> None:
        self.inner = inner
        self.compression = compression
        self.max_norm_multiple = max_norm_multiple
        self.listener = listener
        self.statistics_keys = statistics_keys
        self._reference: dict[str, np.ndarray] = {}
        self.accepted_count = 0
        """How many updates the last :meth:`aggregate_train` accepted."""
        self.clipping_bound: float | None = None
        """Under differential privacy: refuse an update whose L2 norm (all floating-point
        arrays, as members clip them) exceeds this, i.e. a member that did not clip."""
        self._instructions: list[Message] = []
        self.train_weight_key: str | None = None
        """The metric that weighs training updates, when not the wrapped strategy's
        ``weighted_by_key`` (differential privacy: every member weighs 1)."""
        self.spill: UpdateSpill | None = None
        """Set to stream: where :meth:`receive` keeps the round's updates until the norm
        test (``updates.aggregation=streamed``)."""
        self._round = 0
        self._received: dict[str, _Candidate | UpdateVerdict] = {}
        self.update_digests = False
        """Record the SHA-256 of every update's bytes in its verdict (the coordinator's
        audit trail, to compare with the members' own audit logs)."""

    def summary(self) -> None:
        """Log the wrapped strategy's settings and the guard's."""
        self.inner.summary()
        log.info(
            "update guard: compression %s (top-k %.3g), refuse norms above %.3g x the median; %s",
            self.compression.mode,
            self.compression.topk_fraction,
            self.max_norm_multiple,
            f"streaming aggregation, updates kept in {self.spill.folder} until the norm test"
            if self.spill is not None
            else "the round's updates are gathered in memory",
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays and tell members how to compress their deltas."""
        self._reference = {key: array.numpy() for key, array in arrays.items()}
        self._round = server_round
        self._received = {}
        self._instruction_ids: set[str] = set()
        if self.spill is not None:
            self.spill.clear()  # an earlier attempt's updates are never aggregated
        for key, value in spec_to_config(self.compression).items():
            config[key] = value
        # Kept to name the member behind a reply (Flower's error replies name the SuperLink).
        self._instructions = list(self.inner.configure_train(server_round, arrays, config, grid))
        return self._instructions

    def receive(self, reply: Message) -> Message | None:
        """Screen one reply as it arrives (streaming aggregation) and return it without its
        arrays, which wait in the spill; None for a reply to no instruction of this round
        and attempt (a late member's), which is dropped and logged, never aggregated."""
        if self.spill is None:
            raise RuntimeError("receive() streams replies: set the guard's spill first")
        answers = reply.metadata.reply_to_message_id
        if not self._instruction_ids:  # the Grid gives messages their ids when it pushes them
            self._instruction_ids = {msg.metadata.message_id for msg in self._instructions}
        if answers not in self._instruction_ids:
            log.warning(
                "round %d: dropped a reply from node %d to an instruction of an earlier round "
                "or attempt (a late member); it is not aggregated",
                self._round,
                reply.metadata.src_node_id,
            )
            return None
        if reply.has_error():
            return reply
        self._received[answers] = self._check(self._round, reply, self.spill)
        content = reply.content
        reply.content = RecordDict(
            {key: record for key, record in content.items() if isinstance(record, MetricRecord)}
        )
        # Flower's records sit in reference cycles, which only Python's cyclic collector
        # frees, whenever it next runs; emptied now, the update's bytes go at once.
        for record in content.array_records.values():
            record.clear()
        return reply

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies; the wrapped strategy aggregates the accepted ones."""
        replies = list(replies)
        failed = [msg for msg in replies if msg.has_error()]
        checked = [
            self._received.pop(msg.metadata.reply_to_message_id)
            if msg.metadata.reply_to_message_id in self._received
            else self._check(server_round, msg, None)
            for msg in replies
            if not msg.has_error()
        ]
        try:
            accepted, verdicts = self._norm_test(server_round, checked)
            self.accepted_count = len(accepted)
            if self.listener is not None:
                self.listener(server_round, verdicts)
            if aggregates_a_mean(self.inner):
                return self._mean(server_round, accepted, failed)
            for candidate in accepted:
                candidate.msg.content = self._with_weights(
                    candidate.msg.content, self._delta_of(candidate)
                )
            messages = [candidate.msg for candidate in accepted] + failed
            arrays, metrics = self.inner.aggregate_train(server_round, messages)
            return (None if arrays is None else self._finish(arrays, {})), metrics
        finally:
            if self.spill is not None:
                self.spill.clear()

    def _mean(
        self, server_round: int, accepted: list[_Candidate], failed: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """The weighted mean of the accepted updates, folded in one at a time (for FedAvg
        and FedProx the aggregate itself; the server optimisers take their step from it).
        ``tests/strategies`` checks that the result equals Flower's own."""
        inner = cast(FedAvg, self.inner)
        log.info("aggregate_train: %d updates accepted, %d failures", len(accepted), len(failed))
        for node, msg in zip(reply_senders(self._instructions, failed), failed, strict=True):
            log.info("\t> error in reply for node %d: %s", node, msg.error.reason)
        if not accepted:
            return None, None
        mean = RunningMean(self._reference)
        for candidate, share in zip(
            accepted, update_shares([c.weight for c in accepted]), strict=True
        ):
            mean.add(self._delta_of(candidate), share)
        merged = mean.result()
        contents = [candidate.msg.content for candidate in accepted]
        metrics = inner.train_metrics_aggr_fn(contents, self._train_weight_key())
        if not steps_from_the_mean(inner):
            return ArrayRecord({key: array_of(value) for key, value in merged.items()}), metrics
        stepped = self._optimiser_step(cast(ServerOptimiser, inner), server_round, merged)
        # Running statistics (BatchNorm's mean and variance) stay the members' weighted
        # mean: an Adam, Adagrad or momentum step on a running variance is meaningless, can
        # make it negative, and breaks evaluation.
        statistics = {key: merged[key] for key in self.statistics_keys & set(merged)}
        return self._finish(stepped, statistics), metrics

    def _optimiser_step(
        self, inner: ServerOptimiser, server_round: int, mean: dict[str, np.ndarray]
    ) -> ArrayRecord:
        """The server optimiser's new global arrays from the members' mean: Flower's own
        ``aggregate_train`` given that mean as the only reply (Flower's mean of one reply
        is the reply, exactly), with its metrics aggregation left out."""
        content = RecordDict(
            {
                inner.arrayrecord_key: ArrayRecord({k: array_of(v) for k, v in mean.items()}),
                "metrics": MetricRecord({inner.weighted_by_key: 1}),
            }
        )
        only_reply = Message(content, reply_to=self._instructions[0])
        with _metrics_aggregation_off(inner):
            arrays, _ = inner.aggregate_train(server_round, [only_reply])
        if arrays is None:
            raise RuntimeError(f"{type(inner).__name__} returned no arrays for the mean")
        return arrays

    def _check(
        self, server_round: int, msg: Message, spill: UpdateSpill | None
    ) -> _Candidate | UpdateVerdict:
        """The per-update checks (decoding, structure, NaN/Inf, running statistics,
        clipping): a refusal, or a candidate for the round's norm test, its bytes written
        to ``spill`` when given, else its decoded update kept."""
        node = msg.metadata.src_node_id
        digest = _update_digest(msg) if self.update_digests else ""
        sent, delta_or_reason = self._decode(msg)
        if isinstance(delta_or_reason, str):
            return self._refuse(server_round, node, sent, delta_or_reason, digest=digest)
        delta = delta_or_reason
        norm, problem = measure_update(delta, self.statistics_keys)
        problem = problem or statistics_problem(delta, self._reference, self.statistics_keys)
        problem = problem or self._unclipped(delta)
        if problem is not None:
            return self._refuse(server_round, node, sent, problem, digest=digest)
        candidate = _Candidate(
            msg,
            node,
            sent,
            _weight(msg.content, self._train_weight_key()),
            norm,
            _content_order(msg),
            digest,
        )
        if spill is None:
            candidate.delta = delta
        else:
            record = next(iter(msg.content.array_records.values()))
            candidate.spilled = spill.put(dict(record.items()))
        return candidate

    def _norm_test(
        self, server_round: int, checked: list[_Candidate | UpdateVerdict]
    ) -> tuple[list[_Candidate], list[UpdateVerdict]]:
        """The candidates within ``max_norm_multiple`` x the round's median norm, in content
        order, and every update's verdict (refusals first, in the order they came)."""
        verdicts = [item for item in checked if isinstance(item, UpdateVerdict)]
        candidates = [item for item in checked if isinstance(item, _Candidate)]
        outliers = set(norm_outliers([c.norm for c in candidates], self.max_norm_multiple))
        median = float(np.median([c.norm for c in candidates])) if candidates else 0.0
        accepted: list[_Candidate] = []
        for position, candidate in enumerate(candidates):
            if position in outliers:
                reason = (
                    f"update norm {candidate.norm:.4g} is above {self.max_norm_multiple:g} x "
                    f"the median {median:.4g}"
                )
                verdicts.append(
                    self._refuse(
                        server_round,
                        candidate.node,
                        candidate.sent,
                        reason,
                        candidate.norm,
                        candidate.digest,
                    )
                )
                continue
            accepted.append(candidate)
            verdicts.append(
                UpdateVerdict(
                    candidate.node,
                    candidate.sent,
                    True,
                    norm=candidate.norm,
                    sha256=candidate.digest,
                )
            )
        accepted.sort(key=lambda candidate: candidate.order)
        return accepted, verdicts

    def _delta_of(self, candidate: _Candidate) -> dict[str, np.ndarray]:
        """A candidate's decoded update: kept in memory, or read back from the spill."""
        if candidate.delta is not None:
            return candidate.delta
        if candidate.spilled is None:
            raise RuntimeError(f"the update of node {candidate.node} was neither kept nor spilled")
        payload = {k: array_view(a) for k, a in UpdateSpill.load(candidate.spilled).items()}
        return decode_update(payload, self._reference, self.compression)

    def _decode(self, msg: Message) -> tuple[int, dict[str, np.ndarray] | str]:
        records = msg.content.array_records
        if len(records) != 1:
            return 0, f"expected one ArrayRecord, got {len(records)}"
        weight_key = self._train_weight_key()
        try:
            _weight(msg.content, weight_key)
        except ValueError as exc:
            return 0, str(exc)
        record = next(iter(records.values()))
        sent = sum(len(array.data) for array in record.values())
        try:
            payload = {key: array_view(array) for key, array in record.items()}
            delta = decode_update(payload, self._reference, self.compression)
        except (CompressionError, ValueError) as exc:
            return sent, f"undecodable update: {exc}"
        problem = structural_problem(delta, self._reference)
        return sent, problem if problem is not None else delta

    def _unclipped(self, delta: dict[str, np.ndarray]) -> str | None:
        if self.clipping_bound is None:
            return None
        norm = update_norm(delta)
        if norm <= self.clipping_bound * CLIPPING_TOLERANCE:
            return None
        return (
            f"update norm {norm:.4g} exceeds privacy.clipping_norm={self.clipping_bound:g}: "
            "the member did not clip its update"
        )

    def _train_weight_key(self) -> str:
        inner_key = str(getattr(self.inner, "weighted_by_key", EXAMPLES_KEY))
        return self.train_weight_key or inner_key

    def _finish(self, arrays: ArrayRecord, replaced: dict[str, np.ndarray]) -> ArrayRecord:
        """The aggregate with ``replaced`` arrays swapped in, and every array back in the
        model's dtype: averaging turns integer buffers (BatchNorm's counters) into floats,
        and the next round's updates must match the model."""
        restored = {}
        for key, array in arrays.items():
            value = replaced[key] if key in replaced else array.numpy()
            target = self._reference[key].dtype if key in self._reference else value.dtype
            if value.dtype != target and not np.issubdtype(target, np.floating):
                value = np.rint(value)
            restored[key] = array_of(np.asarray(value, dtype=target))
        return ArrayRecord(restored)

    def _with_weights(self, content: RecordDict, delta: dict[str, np.ndarray]) -> RecordDict:
        """The reply with its delta replaced by the full weights the strategy expects."""
        weights = {
            key: array_of(np.asarray(ref + delta[key], dtype=ref.dtype))
            for key, ref in self._reference.items()
        }
        record_key = next(iter(content.array_records))
        metrics = {key: value for key, value in content.items() if key != record_key}
        return RecordDict({record_key: ArrayRecord(weights), **metrics})

    @staticmethod
    def _refuse(
        server_round: int,
        node: int,
        sent: int,
        reason: str,
        norm: float = float("nan"),
        digest: str = "",
    ) -> UpdateVerdict:
        log.warning("round %d: refused the update of node %d: %s", server_round, node, reason)
        return UpdateVerdict(node, sent, False, reason, norm, digest)
