"""One round's training exchange under Flower's SecAgg+ (``privacy.secure_aggregation``).

Flower 1.42 runs SecAgg+ only through its legacy workflow: ``SecAggPlusWorkflow`` asks a
legacy ``Strategy`` for fit instructions, runs the four stages (keys, shares, masked
updates, unmasking) with the members' ``secaggplus_mod``, and hands the unmasked,
example-weighted mean to the strategy's ``aggregate_fit`` inside every member's ``FitRes``.
This module gives the workflow the round's instructions through a minimal legacy
strategy and turns what comes back into the replies the round loop already handles: one
per member that entered the sum, with that member's metrics and the mean as its update.
The update guard and the configured strategy then see identical updates whose weighted
mean is the secure aggregate, as Flower's own backward compatibility does.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

import numpy as np
from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.common import (
    EvaluateIns,
    EvaluateRes,
    FitIns,
    FitRes,
    Parameters,
    Scalar,
    ndarrays_to_parameters,
    parameters_to_ndarrays,
)
from flwr.server import LegacyContext
from flwr.server.client_manager import ClientManager, SimpleClientManager
from flwr.server.client_proxy import ClientProxy
from flwr.server.compat.grid_client_proxy import GridClientProxy
from flwr.server.strategy import Strategy as LegacyStrategy
from flwr.server.workflow import SecAggPlusWorkflow
from flwr.server.workflow.constant import MAIN_CONFIGS_RECORD, MAIN_PARAMS_RECORD
from flwr.server.workflow.constant import Key as WorkflowKey
from flwr.server.workflow.secure_aggregation.secaggplus_workflow import WorkflowState
from flwr.serverapp import Grid

from fractofl.core.config.run_config import PrivacyConfig
from fractofl.core.wire.compression import CompressionSpec, encode_update
from fractofl.core.wire.update_protocol import (
    ARRAYS_KEY,
    CONFIG_KEY,
    EXAMPLES_KEY,
    METRICS_KEY,
    SERVER_ROUND_KEY,
)
from fractofl.strategies.secure_aggregation import MODULUS_RANGE

log = logging.getLogger("fractofl")

DENSE = CompressionSpec("none", 1.0)


class _RoundInstructions(LegacyStrategy):
    """A legacy strategy that hands SecAgg+ the round's instructions and keeps what it
    aggregates; it computes nothing itself."""

    def __init__(self, instructions: list[tuple[ClientProxy, FitIns]]) -> None:
        self.instructions = instructions
        self.results: list[tuple[ClientProxy, FitRes]] = []

    def initialize_parameters(self, client_manager: ClientManager) -> Parameters | None:
        """Unused: the round loop owns the global model."""
        return None

    def configure_fit(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, FitIns]]:
        """The instructions the round loop's strategy made for this round."""
        return self.instructions

    def aggregate_fit(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, FitRes]],
        failures: list[tuple[ClientProxy, FitRes] | BaseException],
    ) -> tuple[Parameters | None, dict[str, Scalar]]:
        """Keep the results (each carries the unmasked mean); aggregation happens later."""
        self.results = results
        return None, {}

    def configure_evaluate(
        self, server_round: int, parameters: Parameters, client_manager: ClientManager
    ) -> list[tuple[ClientProxy, EvaluateIns]]:
        """Unused: federated evaluation runs outside SecAgg+."""
        return []

    def aggregate_evaluate(
        self,
        server_round: int,
        results: list[tuple[ClientProxy, EvaluateRes]],
        failures: list[tuple[ClientProxy, EvaluateRes] | BaseException],
    ) -> tuple[float | None, dict[str, Scalar]]:
        """Unused."""
        return None, {}

    def evaluate(
        self, server_round: int, parameters: Parameters
    ) -> tuple[float, dict[str, Scalar]] | None:
        """Unused."""
        return None


@dataclass(frozen=True)
class SecureExchange:
    """SecAgg+ with the ``privacy.secagg_*`` settings, as the round loop's exchange."""

    num_shares: int
    reconstruction_threshold: int
    clipping_range: float
    quantization_range: int
    max_weight: float

    @classmethod
    def from_config(cls, privacy: PrivacyConfig) -> SecureExchange:
        """The exchange ``privacy.secagg_*`` describe."""
        return cls(
            num_shares=privacy.secagg_num_shares,
            reconstruction_threshold=privacy.secagg_reconstruction_threshold,
            clipping_range=privacy.secagg_clipping_range,
            quantization_range=privacy.secagg_quantization_range,
            max_weight=privacy.secagg_max_weight,
        )

    def summary(self) -> None:
        """Log the protocol's settings."""
        log.info(
            "secure aggregation: SecAgg+ with %d shares, threshold %d, clipping range %g, "
            "%d quantisation levels, max weight %g; the coordinator sees only the sum, so "
            "update norm screening is off",
            self.num_shares,
            self.reconstruction_threshold,
            self.clipping_range,
            self.quantization_range,
            self.max_weight,
        )

    def __call__(self, grid: Grid, messages: list[Message], timeout_s: float) -> list[Message]:
        """Run SecAgg+ for one round's training ``messages``; one reply per member whose
        masked update entered the sum (none when the protocol halted)."""
        if not messages:
            return []
        model = {
            key: (tuple(array.shape), array.numpy().dtype)
            for key, array in messages[0].content.array_records[ARRAYS_KEY].items()
        }
        by_node = {msg.metadata.dst_node_id: msg for msg in messages}
        strategy = _RoundInstructions(self._instructions(grid, messages))
        manager = SimpleClientManager()
        for proxy, _ in strategy.instructions:
            manager.register(proxy)
        context = LegacyContext(
            Context(
                run_id=grid.run.run_id, node_id=0, node_config={}, state=RecordDict(), run_config={}
            ),
            strategy=strategy,
            client_manager=manager,
        )
        server_round = cast(int, messages[0].content.config_records[CONFIG_KEY][SERVER_ROUND_KEY])
        context.state.config_records[MAIN_CONFIGS_RECORD] = ConfigRecord(
            {WorkflowKey.CURRENT_ROUND: server_round}
        )
        context.state.array_records[MAIN_PARAMS_RECORD] = ArrayRecord()
        if not self._run(grid, context, len(messages), timeout_s):
            return []
        return [
            self._reply(by_node[proxy.node_id], fitres, model) for proxy, fitres in strategy.results
        ]

    def _run(self, grid: Grid, context: LegacyContext, members: int, timeout_s: float) -> bool:
        """The workflow's four stages for ``members`` sampled members; False (and the
        reason logged) when one halts."""
        # A round may sample fewer members than the configured shares (dropouts, small
        # consortia): then every member holds a share of every secret. Flower takes an int
        # above 2 or a fraction of the sampled members, hence 1.0.
        shares: int | float = self.num_shares if self.num_shares < members else 1.0
        workflow = SecAggPlusWorkflow(
            num_shares=shares,
            reconstruction_threshold=min(self.reconstruction_threshold, members),
            max_weight=self.max_weight,
            clipping_range=self.clipping_range,
            quantization_range=self.quantization_range,
            modulus_range=MODULUS_RANGE,
            timeout=timeout_s,
        )
        state = WorkflowState()
        stages = (
            workflow.setup_stage,
            workflow.share_keys_stage,
            workflow.collect_masked_vectors_stage,
            workflow.unmask_stage,
        )
        for stage in stages:
            if not stage(grid, context, state):
                reasons = "; ".join(str(failure) for failure in state.failures) or "none"
                log.warning(
                    "secure aggregation halted in its %s (%d member(s) still active, "
                    "threshold %d); members' errors: %s",
                    stage.__name__.replace("_", " "),
                    len(state.active_node_ids),
                    state.threshold,
                    reasons,
                )
                return False
        return True

    @staticmethod
    def _instructions(grid: Grid, messages: list[Message]) -> list[tuple[ClientProxy, FitIns]]:
        """The round's messages as legacy fit instructions (parameters in key order)."""
        instructions: list[tuple[ClientProxy, FitIns]] = []
        for msg in messages:
            arrays = msg.content.array_records[ARRAYS_KEY]
            parameters = ndarrays_to_parameters([array.numpy() for array in arrays.values()])
            config = dict(msg.content.config_records[CONFIG_KEY])
            proxy = GridClientProxy(msg.metadata.dst_node_id, grid, grid.run.run_id)
            instructions.append((proxy, FitIns(parameters, config)))  # type: ignore[arg-type]
        return instructions

    @staticmethod
    def _reply(
        instruction: Message, fitres: FitRes, model: dict[str, tuple[tuple[int, ...], np.dtype]]
    ) -> Message:
        """A member's reply in the round loop's layout, carrying the secure mean in the
        model's shapes and dtypes (members send scalars as 1-element vectors; integer
        buffers' changes are zero)."""
        mean = parameters_to_ndarrays(fitres.parameters)
        delta = {}
        for (key, (shape, dtype)), value in zip(model.items(), mean, strict=True):
            value = np.reshape(value, shape)
            if not np.issubdtype(dtype, np.floating):
                value = np.rint(value)
            delta[key] = np.asarray(value, dtype=dtype)
        payload = encode_update(delta, DENSE)
        metrics: dict[str, int | float | list[int] | list[float]] = {
            key: value
            for key, value in fitres.metrics.items()
            if isinstance(value, int | float) and not isinstance(value, bool)
        }
        metrics[EXAMPLES_KEY] = fitres.num_examples
        content = RecordDict(
            {
                ARRAYS_KEY: ArrayRecord({key: Array(value) for key, value in payload.items()}),
                METRICS_KEY: MetricRecord(metrics),
            }
        )
        return Message(content, reply_to=instruction)
