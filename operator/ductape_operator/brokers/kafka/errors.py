"""aiokafka's exceptions, sorted once for the operator side and the client side."""

from __future__ import annotations

from aiokafka import errors as kafka_errors

from ductape_operator import errors

#: Error codes that refuse the credentials or a permission.
_AUTH = frozenset(
    {
        kafka_errors.TopicAuthorizationFailedError.errno,
        kafka_errors.GroupAuthorizationFailedError.errno,
        kafka_errors.ClusterAuthorizationFailedError.errno,
        kafka_errors.SaslAuthenticationFailed.errno,
    }
)
#: The request or the config is at fault: trying again with nothing changed cannot help.
_PERMANENT = frozenset(
    {
        kafka_errors.InvalidTopicError.errno,
        kafka_errors.InvalidPartitionsError.errno,
        kafka_errors.InvalidReplicationFactorError.errno,
        kafka_errors.InvalidReplicationAssignmentError.errno,
        kafka_errors.InvalidConfigurationError.errno,
        kafka_errors.PolicyViolationError.errno,
        kafka_errors.InvalidRequestError.errno,
    }
)


def classify(exc: BaseException) -> errors.Failure | None:
    """What an aiokafka exception means (None: not one of aiokafka's, nor a socket error)."""
    code = getattr(exc, "errno", None) if isinstance(exc, kafka_errors.KafkaError) else None
    if isinstance(exc, kafka_errors.AuthenticationFailedError) or code in _AUTH:
        return errors.Failure.AUTH
    if code in _PERMANENT:
        return errors.Failure.INVALID
    if isinstance(exc, kafka_errors.UnknownTopicOrPartitionError):
        return errors.Failure.NOT_FOUND
    if isinstance(
        exc,
        kafka_errors.KafkaConnectionError
        | kafka_errors.NoBrokersAvailable
        | kafka_errors.NodeNotReadyError
        | kafka_errors.KafkaTimeoutError
        | kafka_errors.RequestTimedOutError
        | OSError,
    ):
        return errors.Failure.UNREACHABLE
    if isinstance(exc, kafka_errors.KafkaError):
        # aiokafka marks each error retriable (a leader moving, a coordinator loading,
        # too few replicas in sync just now) or not.
        return errors.Failure.THROTTLED if exc.retriable else errors.Failure.INVALID
    return None
