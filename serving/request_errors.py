"""Request errors that carry their HTTP status, for every server that runs inference.py.

Inside the SageMaker container the inference toolkit answers an exception that is a
``BaseInferenceToolkitError`` with its ``status_code`` (any other exception becomes a
500), so these classes derive from it there; elsewhere (the local endpoint, tests) they
are plain exceptions with the same ``status_code``, ``message`` and ``phrase`` fields,
which the local endpoint maps to its replies itself.
"""

from __future__ import annotations

from http import HTTPStatus

try:  # in the SageMaker PyTorch container
    from sagemaker_inference.errors import BaseInferenceToolkitError as _ErrorBase
except ImportError:  # anywhere else
    _ErrorBase = Exception


class RequestError(_ErrorBase):  # type: ignore[misc,valid-type]
    """A request the model cannot answer; ``status_code`` is the HTTP status to reply."""

    status: HTTPStatus = HTTPStatus.BAD_REQUEST

    def __init__(self, reason: str) -> None:
        Exception.__init__(self, reason)
        self.status_code = int(self.status)
        self.message = reason
        self.phrase = reason
        self.reason = reason

    def __str__(self) -> str:
        return self.reason


class UndecodableInputError(RequestError):
    """An empty body, or bytes that are not an image or array of the declared type (400)."""

    status = HTTPStatus.BAD_REQUEST


class ImageScaleError(RequestError):
    """An image a physical-scale model cannot bring to its scale: no pixel size given,
    a malformed one, or an image smaller than one tile at that scale (400)."""

    status = HTTPStatus.BAD_REQUEST


class UnsupportedContentTypeError(RequestError):
    """A content type that the model does not take (415)."""

    status = HTTPStatus.UNSUPPORTED_MEDIA_TYPE


class NotAcceptableError(RequestError):
    """An ``Accept`` header that excludes JSON, the only answer format (406)."""

    status = HTTPStatus.NOT_ACCEPTABLE
