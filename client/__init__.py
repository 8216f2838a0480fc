"""fractofl.client."""
