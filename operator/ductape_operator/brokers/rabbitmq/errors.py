"""aio-pika's (and aiormq's) exceptions, sorted once for the operator side and the client side."""

from __future__ import annotations

from aio_pika import exceptions as amqp_errors
from aiormq import exceptions as aiormq_errors

from ductape_operator import errors


def classify(exc: BaseException) -> errors.Failure | None:
    """What an AMQP exception means (None: not one of aio-pika's, nor a socket error)."""
    if isinstance(
        exc,
        amqp_errors.AuthenticationError
        | amqp_errors.ProbableAuthenticationError
        | aiormq_errors.ChannelAccessRefused
        | aiormq_errors.ConnectionNotAllowed,
    ):
        return errors.Failure.AUTH
    if isinstance(exc, amqp_errors.ChannelNotFoundEntity):
        return errors.Failure.NOT_FOUND
    # Returned as unroutable (`mandatory`): no queue is bound, sending again won't help.
    if isinstance(exc, amqp_errors.ChannelPreconditionFailed | aiormq_errors.PublishError):
        return errors.Failure.INVALID
    # A nack: the broker could not take it just now (a queue going down): send again.
    if isinstance(exc, amqp_errors.DeliveryError):
        return errors.Failure.THROTTLED
    if isinstance(
        exc,
        amqp_errors.AMQPConnectionError
        | amqp_errors.ChannelInvalidStateError
        | ConnectionError
        | OSError,
    ):
        return errors.Failure.UNREACHABLE
    if isinstance(exc, amqp_errors.AMQPError):
        return errors.Failure.FAILED
    return None
