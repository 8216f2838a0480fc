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
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedProx, Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fractofl.core.wire.compression import CompressionError, CompressionSpec, decode_update
from fractofl.core.wire.update_protocol import EXAMPLES_KEY, spec_to_config
from fractofl.strategies.mean import weighted_mean_update
from fractofl.strategies.npy_arrays import array_of, array_view
from fractofl.strategies.replies import reply_senders
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


ScreenListener = Callable[[int, list[UpdateVerdict]], None]

# Strategies whose aggregate is exactly the weighted mean of the member weights.
PLAIN_MEANS = (FedAvg, FedProx)
CLIPPING_TOLERANCE = 1.0 + 1e-3  # float32 rounding of a clipped update's norm


def _weight(content: RecordDict, key: str) -> float:
    """The positive weight (``key``, e.g. ``EXAMPLES_KEY``) a reply carries, or ValueError."""
    records = list(content.metric_records.values())
    value = records[0].get(key) if len(records) == 1 else None
    if not isinstance(value, int | float) or not value > 0:
        raise ValueError(f"the reply needs one MetricRecord with a positive '{key}'")
    return float(value)


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
    for metrics in msg.content.metric_records.values():
        digest.update(repr(sorted(metrics.items())).encode())
    return digest.digest()


class UpdateGuard(WrappingStrategy):
    """Decode, validate and filter member updates, then delegate to ``inner``."""

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

    def summary(self) -> None:
        """Log the wrapped strategy's settings and the guard's."""
        self.inner.summary()
        log.info(
            "update guard: compression %s (top-k %.3g), refuse norms above %.3g x the median",
            self.compression.mode,
            self.compression.topk_fraction,
            self.max_norm_multiple,
        )

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Remember the global arrays and tell members how to compress their deltas."""
        self._reference = {key: array.numpy() for key, array in arrays.items()}
        for key, value in spec_to_config(self.compression).items():
            config[key] = value
        # Kept to name the member behind a reply (Flower's error replies name the SuperLink).
        self._instructions = list(self.inner.configure_train(server_round, arrays, config, grid))
        return self._instructions

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies; the wrapped strategy aggregates the accepted ones."""
        replies = list(replies)
        failed = [msg for msg in replies if msg.has_error()]
        accepted, verdicts = self._screen(server_round, [m for m in replies if not m.has_error()])
        self.accepted_count = len(accepted)
        if self.listener is not None:
            self.listener(server_round, verdicts)
        if type(self.inner) in PLAIN_MEANS:
            return self._mean_of_deltas(accepted, failed)
        for msg, delta in accepted:
            msg.content = self._with_weights(msg.content, delta)
        messages = [msg for msg, _ in accepted] + failed
        arrays, metrics = self.inner.aggregate_train(server_round, messages)
        if arrays is None:
            return None, metrics
        return self._finish(arrays, self._averaged_statistics(accepted)), metrics

    def _averaged_statistics(
        self, accepted: list[tuple[Message, dict[str, np.ndarray]]]
    ) -> dict[str, np.ndarray]:
        """Running statistics (BatchNorm's mean and variance) as the members' weighted mean
        when the wrapped strategy is a server optimiser: an Adam or Adagrad step on a
        running variance is meaningless, can make it negative, and breaks evaluation."""
        keys = self.statistics_keys & set(self._reference)
        if not isinstance(self.inner, FedOpt) or not keys or not accepted:
            return {}
        weights = [_weight(msg.content, self._train_weight_key()) for msg, _ in accepted]
        return weighted_mean_update(
            {k: self._reference[k] for k in keys},
            [{k: delta[k] for k in keys} for _, delta in accepted],
            weights,
        )

    def _mean_of_deltas(
        self, accepted: list[tuple[Message, dict[str, np.ndarray]]], failed: list[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """FedAvg's (and FedProx's) weighted mean, computed from the decoded deltas in one
        fused pass each instead of re-serialising full weights for Flower to decode again.
        ``tests/strategies`` checks that the result equals Flower's own."""
        inner = cast(FedAvg, self.inner)
        log.info("aggregate_train: %d updates accepted, %d failures", len(accepted), len(failed))
        for node, msg in zip(reply_senders(self._instructions, failed), failed, strict=True):
            log.info("\t> error in reply for node %d: %s", node, msg.error.reason)
        if not accepted:
            return None, None
        contents = [msg.content for msg, _ in accepted]
        weight_key = self._train_weight_key()
        weights = [_weight(content, weight_key) for content in contents]
        merged = weighted_mean_update(self._reference, [d for _, d in accepted], weights)
        metrics = inner.train_metrics_aggr_fn(contents, weight_key)
        return ArrayRecord({key: array_of(value) for key, value in merged.items()}), metrics

    def _screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[tuple[Message, dict[str, np.ndarray]]], list[UpdateVerdict]]:
        candidates: list[tuple[Message, dict[str, np.ndarray], int, float]] = []
        verdicts: list[UpdateVerdict] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            sent, delta_or_reason = self._decode(msg)
            if isinstance(delta_or_reason, str):
                verdicts.append(self._refuse(server_round, node, sent, delta_or_reason))
                continue
            norm, problem = measure_update(delta_or_reason, self.statistics_keys)
            problem = problem or statistics_problem(
                delta_or_reason, self._reference, self.statistics_keys
            )
            problem = problem or self._unclipped(delta_or_reason)
            if problem is not None:
                verdicts.append(self._refuse(server_round, node, sent, problem))
                continue
            candidates.append((msg, delta_or_reason, sent, norm))

        outliers = set(norm_outliers([c[3] for c in candidates], self.max_norm_multiple))
        median = float(np.median([c[3] for c in candidates])) if candidates else 0.0
        accepted: list[tuple[Message, dict[str, np.ndarray]]] = []
        for position, (msg, delta, sent, norm) in enumerate(candidates):
            node = msg.metadata.src_node_id
            if position in outliers:
                reason = (
                    f"update norm {norm:.4g} is above {self.max_norm_multiple:g} x "
                    f"the median {median:.4g}"
                )
                verdicts.append(self._refuse(server_round, node, sent, reason, norm))
                continue
            accepted.append((msg, delta))
            verdicts.append(UpdateVerdict(node, sent, True, norm=norm))
        accepted.sort(key=lambda item: _content_order(item[0]))
        return accepted, verdicts

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
        server_round: int, node: int, sent: int, reason: str, norm: float = float("nan")
    ) -> UpdateVerdict:
        log.warning("round %d: refused the update of node %d: %s", server_round, node, reason)
        return UpdateVerdict(node, sent, False, reason, norm)
