"""The states of the global random generators the coordinator draws from, captured and
put back (a round's checkpoint holds them; the round loop keeps one for a round that
closes later)."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch


@dataclass
class RandomState:
    """The generators the coordinator draws from (member sampling, evaluation order)."""

    python: Any
    numpy: Any
    torch: torch.Tensor

    @classmethod
    def capture(cls) -> RandomState:
        """The current states of Python's, numpy's and torch's global generators."""
        return cls(random.getstate(), np.random.get_state(), torch.get_rng_state())

    def restore(self) -> None:
        """Make the global generators continue from this state."""
        random.setstate(self.python)
        np.random.set_state(self.numpy)
        torch.set_rng_state(self.torch)
