"""redis-py's exceptions, sorted once for the operator side and the client side."""

from __future__ import annotations

from redis import exceptions as redis_errors

from ductape_operator import errors

#: Replies that refuse the credentials or a permission (the server's own words).
_AUTH_REPLIES = ("NOAUTH", "WRONGPASS", "NOPERM")
#: A consumer group (a subscription) or its stream that is not there.
_NOT_FOUND_REPLIES = ("NOGROUP",)


def classify(exc: BaseException) -> errors.Failure | None:
    """What a redis-py exception means (None: not one of redis-py's, nor a socket error)."""
    if isinstance(
        exc,
        redis_errors.AuthenticationError
        | redis_errors.AuthorizationError
        | redis_errors.NoPermissionError,
    ) or (isinstance(exc, redis_errors.ResponseError) and str(exc).startswith(_AUTH_REPLIES)):
        return errors.Failure.AUTH
    # BusyLoadingError is a ConnectionError: a server still loading is not there yet.
    if isinstance(exc, redis_errors.ConnectionError | redis_errors.TimeoutError | OSError):
        return errors.Failure.UNREACHABLE
    if isinstance(
        exc,
        redis_errors.TryAgainError | redis_errors.ReadOnlyError | redis_errors.OutOfMemoryError,
    ):
        return errors.Failure.THROTTLED
    if isinstance(exc, redis_errors.ResponseError):
        if str(exc).startswith(_NOT_FOUND_REPLIES):
            return errors.Failure.NOT_FOUND
        return errors.Failure.INVALID
    if isinstance(exc, redis_errors.RedisError):
        return errors.Failure.FAILED
    return None
