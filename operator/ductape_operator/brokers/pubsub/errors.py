"""google-api-core's and google-auth's exceptions, sorted once for the operator side and the
client side."""

from __future__ import annotations

import grpc  # type: ignore[import-untyped]
from google.api_core import exceptions as google_errors
from google.auth import exceptions as auth_errors

from ductape_operator import errors


def classify(exc: BaseException) -> errors.Failure | None:
    """What a Google API exception means (None: not one of Google's, nor a socket error)."""
    if isinstance(exc, google_errors.PermissionDenied | google_errors.Unauthenticated):
        return errors.Failure.AUTH
    if isinstance(
        exc,
        google_errors.ServiceUnavailable
        | google_errors.DeadlineExceeded
        | google_errors.RetryError
        | auth_errors.TransportError
        | grpc.aio.AioRpcError
        | ConnectionError
        | OSError,
    ):
        return errors.Failure.UNREACHABLE
    # Refused or unusable credentials (a transport error on the way to the token server
    # is told apart above).
    if isinstance(exc, auth_errors.GoogleAuthError):
        return errors.Failure.AUTH
    if isinstance(exc, google_errors.NotFound):
        return errors.Failure.NOT_FOUND
    if isinstance(exc, google_errors.ResourceExhausted | google_errors.TooManyRequests):
        return errors.Failure.THROTTLED
    # A bad topic or subscription id, or a request the service will never take.
    if isinstance(exc, google_errors.InvalidArgument):
        return errors.Failure.INVALID
    if isinstance(exc, google_errors.GoogleAPIError):
        return errors.Failure.FAILED
    return None
