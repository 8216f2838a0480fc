"""fractofl.server."""
