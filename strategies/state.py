"""What a strategy remembers between rounds, taken out and put back for checkpoints.

Of the strategies in the registry only the server optimisers carry state from round to
round: the first and second moments ``m_t`` and ``v_t`` of FedAdam, FedYogi and FedAdagrad
(Flower's ``FedOpt``), and FedAvgM's momentum buffer (``momentum``, by array name).
``current_arrays`` is reset from the global model in every ``configure_train`` and the
update guard's reference likewise, so neither is saved.
"""

from __future__ import annotations

import numpy as np
from flwr.serverapp.strategy import Strategy
from flwr.serverapp.strategy.fedopt import FedOpt

from fractofl.strategies.fedavgm import FedAvgMFromGlobal
from fractofl.strategies.guard import UpdateGuard

StrategyState = dict[str, dict[str, np.ndarray]]

MOMENTS = ("m_t", "v_t")
MOMENTUM = "momentum"


def _inner(strategy: Strategy) -> Strategy:
    return strategy.inner if isinstance(strategy, UpdateGuard) else strategy


def _kept(inner: Strategy) -> tuple[str, ...]:
    """The names of the state ``inner`` carries between rounds."""
    if isinstance(inner, FedAvgMFromGlobal):
        return (MOMENTUM,)
    if isinstance(inner, FedOpt):
        return MOMENTS
    return ()


def strategy_state(strategy: Strategy) -> StrategyState:
    """Copies of the arrays the strategy carries into the next round (may be empty)."""
    inner = _inner(strategy)
    if isinstance(inner, FedAvgMFromGlobal):
        momentum = inner.momentum_by_name()
        return {MOMENTUM: momentum} if momentum else {}
    if not isinstance(inner, FedOpt):
        return {}
    state: StrategyState = {}
    for name in MOMENTS:
        moments = getattr(inner, name, None)
        if moments is not None:
            state[name] = {key: np.array(value, copy=True) for key, value in moments.items()}
    return state


def restore_strategy_state(strategy: Strategy, state: StrategyState) -> None:
    """Put back what :func:`strategy_state` took; refuses state the strategy cannot hold."""
    inner = _inner(strategy)
    known = _kept(inner)
    if not known:
        if state:
            raise ValueError(
                f"the checkpoint holds strategy state {sorted(state)}, but "
                f"{type(inner).__name__} keeps none: was the run's strategy changed?"
            )
        return
    unknown = sorted(set(state) - set(known))
    if unknown:
        raise ValueError(
            f"unknown strategy state {unknown} for {type(inner).__name__} (it keeps "
            f"{', '.join(known)}): was the run's strategy changed?"
        )
    if isinstance(inner, FedAvgMFromGlobal):
        if MOMENTUM in state:  # absent with server_momentum=0, which keeps none
            inner.restore_momentum(state[MOMENTUM])
        return
    for name in MOMENTS:
        setattr(inner, name, dict(state[name]) if name in state else None)
