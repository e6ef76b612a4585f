"""botocore's exceptions, sorted once for the operator side and the client side."""

from __future__ import annotations

from botocore import exceptions as botocore_errors

from ductape_operator import errors

#: Error codes that refuse the credentials or a permission.
AUTH_CODES = frozenset(
    {
        "InvalidClientTokenId",
        "UnrecognizedClientException",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "InvalidSecurity",
        "AccessDenied",
        "AccessDeniedException",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
    }
)
#: A queue that is not there.
NOT_FOUND_CODES = frozenset({"AWS.SimpleQueueService.NonExistentQueue", "QueueDoesNotExist"})
#: The service is busy or rate-limits us: the same request will succeed later.
THROTTLED_CODES = frozenset(
    {
        "ThrottlingException",
        "RequestThrottled",
        "ServiceUnavailable",
        "InternalError",
        "InternalFailure",
    }
)
#: The request or the config is at fault: trying again with nothing changed cannot help.
INVALID_CODES = frozenset(
    {
        "InvalidParameterValue",
        "InvalidParameterValueException",
        "InvalidAttributeName",
        "InvalidAttributeValue",
        "ValidationError",
        "InvalidAddress",
    }
)


def code(exc: botocore_errors.ClientError) -> str:
    """The error code of a service reply."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def classify(exc: BaseException) -> errors.Failure | None:
    """What a botocore exception means (None: not one of botocore's, nor a socket error)."""
    if isinstance(exc, botocore_errors.ClientError):
        found = code(exc)
        if found in AUTH_CODES:
            return errors.Failure.AUTH
        if found in NOT_FOUND_CODES:
            return errors.Failure.NOT_FOUND
        if found in THROTTLED_CODES:
            return errors.Failure.THROTTLED
        if found in INVALID_CODES:
            return errors.Failure.INVALID
        return errors.Failure.FAILED
    if isinstance(
        exc, botocore_errors.NoCredentialsError | botocore_errors.PartialCredentialsError
    ):
        return errors.Failure.AUTH
    if isinstance(
        exc,
        botocore_errors.EndpointConnectionError
        | botocore_errors.ConnectionError
        | botocore_errors.ConnectTimeoutError
        | botocore_errors.ReadTimeoutError
        | botocore_errors.HTTPClientError
        | ConnectionError
        | OSError,
    ):
        return errors.Failure.UNREACHABLE
    if isinstance(exc, botocore_errors.BotoCoreError):
        return errors.Failure.FAILED
    return None
