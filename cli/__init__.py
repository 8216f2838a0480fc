"""fractofl.cli."""
