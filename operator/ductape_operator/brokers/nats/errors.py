"""nats-py's exceptions, sorted once for the operator side and the client side.

nats-py reports why a connect failed only to its error callback, then raises
`NoServersError`; each side passes that last reported error (`sdk.LastError`) to
`cause`, so refused credentials, a failed TLS handshake or a name that does not
resolve are still told apart.
"""

from __future__ import annotations

import nats.errors as nats_errors
import nats.js.errors as js_errors

from ductape_operator import errors

#: What the server says when it refuses a connection's credentials or permissions.
_AUTH_TEXTS = (
    "authorization violation",
    "authentication expired",
    "authentication revoked",
    "user authentication",
    "permissions violation",
    "account authentication",
)
#: JetStream API error codes (err_code) that mean "not now": limits and busy servers.
_THROTTLED_CODES = frozenset({10023, 10026, 10027, 10047, 10077, 10078})
#: TLS asked for by one side only, or its handshake failed: the operator side reports
#: them as TLSFailed (README.md, "Conditions").
TLS_ERRORS = (
    nats_errors.SecureConnFailedError,
    nats_errors.SecureConnRequiredError,
    nats_errors.SecureConnWantedError,
)
_UNREACHABLE = (
    nats_errors.NoServersError,
    nats_errors.NoRespondersError,  # no JetStream answered: not (yet) enabled, or restarting
    nats_errors.ConnectionClosedError,
    nats_errors.ConnectionReconnectingError,
    nats_errors.ConnectionDrainingError,
    nats_errors.StaleConnectionError,
    nats_errors.OutboundBufferLimitError,
    nats_errors.TimeoutError,
    TimeoutError,
    OSError,  # socket errors, ssl.SSLError among them
    *TLS_ERRORS,
)


def is_not_found(exc: BaseException) -> bool:
    """A stream or consumer that is not there."""
    return classify(exc) is errors.Failure.NOT_FOUND


def classify(exc: BaseException, cause: BaseException | None = None) -> errors.Failure | None:
    """What a nats-py exception means (None: not one of nats-py's, nor a socket error).

    `cause`: the last error nats-py reported to its callback, which says why a
    `NoServersError` came.
    """
    if isinstance(exc, nats_errors.NoServersError) and cause is not None:
        found = classify(cause)
        if found is not None:
            return found
    text = str(exc).lower()
    if isinstance(exc, nats_errors.AuthorizationError) or (
        isinstance(exc, nats_errors.Error) and any(t in text for t in _AUTH_TEXTS)
    ):
        return errors.Failure.AUTH
    if isinstance(exc, js_errors.NotFoundError | js_errors.NoStreamResponseError):
        return errors.Failure.NOT_FOUND
    if isinstance(exc, js_errors.APIError):
        if exc.code in (401, 403):
            return errors.Failure.AUTH
        if isinstance(exc, js_errors.ServiceUnavailableError) or (exc.err_code in _THROTTLED_CODES):
            return errors.Failure.THROTTLED
        if isinstance(exc, js_errors.ServerError):
            return errors.Failure.FAILED
        return errors.Failure.INVALID
    if isinstance(exc, _UNREACHABLE):
        return errors.Failure.UNREACHABLE
    if isinstance(exc, nats_errors.InvalidUserCredentialsError):
        return errors.Failure.INVALID
    if isinstance(exc, nats_errors.Error | js_errors.Error):
        return errors.Failure.FAILED
    return None
