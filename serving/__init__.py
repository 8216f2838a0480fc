"""fractofl.serving."""
