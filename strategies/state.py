"""What a strategy remembers between rounds, taken out and put back for checkpoints.

Of the strategies in the registry only the server optimisers (FedAdam, FedYogi,
FedAdagrad: Flower's ``FedOpt``) carry state from round to round: their first and second
moments ``m_t`` and ``v_t``. ``current_arrays`` is reset from the global model in every
``configure_train`` and the update guard's reference likewise, so neither is saved.
"""

from __future__ import annotations

import numpy as np
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fractofl.strategies.guard import UpdateGuard

StrategyState = dict[str, dict[str, np.ndarray]]

MOMENTS = ("m_t", "v_t")


def _optimiser(strategy: Strategy) -> FedOpt | None:
    inner = strategy.inner if isinstance(strategy, UpdateGuard) else strategy
    return inner if isinstance(inner, FedOpt) else None


def strategy_state(strategy: Strategy) -> StrategyState:
    """Copies of the arrays the strategy carries into the next round (may be empty)."""
    optimiser = _optimiser(strategy)
    if optimiser is None:
        return {}
    state: StrategyState = {}
    for name in MOMENTS:
        moments = getattr(optimiser, name, None)
        if moments is not None:
            state[name] = {key: np.array(value, copy=True) for key, value in moments.items()}
    return state


def restore_strategy_state(strategy: Strategy, state: StrategyState) -> None:
    """Put back what :func:`strategy_state` took; refuses state the strategy cannot hold."""
    optimiser = _optimiser(strategy)
    if optimiser is None:
        if state:
            raise ValueError(
                f"the checkpoint holds strategy state {sorted(state)}, but "
                f"{type(strategy).__name__} keeps none: was the run's strategy changed?"
            )
        return
    unknown = sorted(set(state) - set(MOMENTS))
    if unknown:
        raise ValueError(f"unknown strategy state {unknown} for {type(optimiser).__name__}")
    for name in MOMENTS:
        setattr(optimiser, name, dict(state[name]) if name in state else None)
