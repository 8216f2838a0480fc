"""fractofl.strategies."""
