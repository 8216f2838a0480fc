"""Serving errors a user can fix from the message alone (the CLI prints them, exit 1)."""

from __future__ import annotations


class ServingError(ValueError):
    """Base of the serving errors below."""


class ArtifactError(ServingError):
    """A SageMaker artifact cannot be built, or a file is not a fractofl artifact."""


class EndpointError(ServingError):
    """An endpoint cannot be started, reached, or answered with an error."""
