"""A wrapper that screens member updates before any strategy aggregates them.

Members reply with a compressed *delta* (see :mod:`fractofl.core.compression`). The guard
remembers the global arrays it sent, decodes each delta, refuses malformed, non-finite and
outlying updates (:mod:`fractofl.strategies.validation`), and hands the accepted ones, as
full weights, to the wrapped Flower strategy, which aggregates them as it always does.
A refused member is logged with its node id, the round and the reason; the round goes on.
The wrapper pattern is Flower's own (its differential-privacy strategies wrap another
strategy the same way), so ``Strategy.start()`` is used unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid
from flwr.serverapp.strategy import Strategy

from fractofl.core.compression import CompressionError, CompressionSpec, decode_update
from fractofl.core.update_protocol import spec_to_config
from fractofl.strategies.validation import norm_outliers, structural_problem, update_norm

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


class UpdateGuard(Strategy):
    """Decode, validate and filter member updates, then delegate to ``inner``."""

    def __init__(
        self,
        inner: Strategy,
        compression: CompressionSpec,
        max_norm_multiple: float,
        listener: ScreenListener | None = None,
    ) -> None:
        self.inner = inner
        self.compression = compression
        self.max_norm_multiple = max_norm_multiple
        self.listener = listener
        self._reference: dict[str, np.ndarray] = {}

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
        return self.inner.configure_train(server_round, arrays, config, grid)

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        """Screen the replies; the wrapped strategy aggregates the accepted ones."""
        replies = list(replies)
        failed = [msg for msg in replies if msg.has_error()]
        accepted, verdicts = self._screen(server_round, [m for m in replies if not m.has_error()])
        if self.listener is not None:
            self.listener(server_round, verdicts)
        arrays, metrics = self.inner.aggregate_train(server_round, accepted + failed)
        return (None if arrays is None else self._with_model_dtypes(arrays)), metrics

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        """Delegated unchanged."""
        return self.inner.configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(
        self, server_round: int, replies: Iterable[Message]
    ) -> MetricRecord | None:
        """Delegated unchanged."""
        return self.inner.aggregate_evaluate(server_round, replies)

    def _screen(
        self, server_round: int, replies: list[Message]
    ) -> tuple[list[Message], list[UpdateVerdict]]:
        candidates: list[tuple[Message, dict[str, np.ndarray], int, float]] = []
        verdicts: list[UpdateVerdict] = []
        for msg in replies:
            node = msg.metadata.src_node_id
            sent, delta_or_reason = self._decode(msg)
            if isinstance(delta_or_reason, str):
                verdicts.append(self._refuse(server_round, node, sent, delta_or_reason))
                continue
            candidates.append((msg, delta_or_reason, sent, update_norm(delta_or_reason)))

        outliers = set(norm_outliers([c[3] for c in candidates], self.max_norm_multiple))
        median = float(np.median([c[3] for c in candidates])) if candidates else 0.0
        accepted: list[Message] = []
        for position, (msg, delta, sent, norm) in enumerate(candidates):
            node = msg.metadata.src_node_id
            if position in outliers:
                reason = (
                    f"update norm {norm:.4g} is above {self.max_norm_multiple:g} x "
                    f"the median {median:.4g}"
                )
                verdicts.append(self._refuse(server_round, node, sent, reason, norm))
                continue
            msg.content = self._with_weights(msg.content, delta)
            accepted.append(msg)
            verdicts.append(UpdateVerdict(node, sent, True, norm=norm))
        return accepted, verdicts

    def _decode(self, msg: Message) -> tuple[int, dict[str, np.ndarray] | str]:
        records = msg.content.array_records
        if len(records) != 1:
            return 0, f"expected one ArrayRecord, got {len(records)}"
        record = next(iter(records.values()))
        sent = sum(len(array.data) for array in record.values())
        try:
            payload = {key: array.numpy() for key, array in record.items()}
            delta = decode_update(payload, self._reference, self.compression)
        except (CompressionError, ValueError) as exc:
            return sent, f"undecodable update: {exc}"
        problem = structural_problem(delta, self._reference)
        return sent, problem if problem is not None else delta

    def _with_model_dtypes(self, arrays: ArrayRecord) -> ArrayRecord:
        """Averaging turns integer buffers (BatchNorm's counters) into floats; give every
        array back the dtype of the model, so the next round's updates match it."""
        restored = {}
        for key, array in arrays.items():
            value = array.numpy()
            target = self._reference[key].dtype if key in self._reference else value.dtype
            if value.dtype != target and not np.issubdtype(target, np.floating):
                value = np.rint(value)
            restored[key] = Array(np.asarray(value, dtype=target))
        return ArrayRecord(restored)

    def _with_weights(self, content: RecordDict, delta: dict[str, np.ndarray]) -> RecordDict:
        """The reply with its delta replaced by the full weights the strategy expects."""
        weights = {
            key: Array(np.asarray(ref + delta[key], dtype=ref.dtype))
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
