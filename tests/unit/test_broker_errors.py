"""Each broker sorts its SDK's exceptions once (`brokers/<name>/errors.py`); its operator
side and its client side both go through that one mapping and agree on what each means.

One table per broker: an SDK exception and what it is (auth, unreachable, not found,
throttled, invalid). For every row, the shared `classify` says so, the operator side
(`Provider._map`) and the client side (`client.map_error`) give the error class that
`Failure` stands for.
"""

from __future__ import annotations

import importlib
from typing import Any

import pamqp.commands
import pytest
from aio_pika import exceptions as amqp_errors
from aiokafka import errors as kafka_errors
from aiormq import exceptions as aiormq_errors
from botocore import exceptions as botocore_errors
from google.api_core import exceptions as google_errors
from google.auth import exceptions as google_auth_errors
from nats import errors as nats_errors
from nats.js import errors as js_errors
from redis import exceptions as redis_errors

from ductape_operator import brokers, errors, models
from ductape_operator.providers import base, build_provider

F = errors.Failure
SECRET = {"secretKeyRef": {"name": "s", "key": "k"}}

#: (operator side's class, its retriable; client side's class, its retriable) per Failure.
EXPECTED: dict[
    errors.Failure, tuple[type[errors.DuctapeError], bool, type[errors.DuctapeError], bool]
] = {
    F.AUTH: (errors.BrokerAuthError, True, errors.BrokerAuthError, True),
    F.UNREACHABLE: (errors.BrokerUnreachableError, True, errors.BrokerUnreachableError, True),
    F.NOT_FOUND: (errors.ProvisioningError, True, errors.ProvisioningError, True),
    # The client retries a throttled request like a lost connection.
    F.THROTTLED: (errors.ProvisioningError, True, errors.BrokerUnreachableError, True),
    F.INVALID: (errors.ProvisioningError, False, errors.BrokerError, False),
}


def _js_error(cls: type[js_errors.APIError], code: int, err_code: int = 0) -> js_errors.APIError:
    return cls(code=code, err_code=err_code, description="from the server")


def _client_error(code: str) -> botocore_errors.ClientError:
    return botocore_errors.ClientError({"Error": {"Code": code, "Message": code}}, "SendMessage")


TABLES: dict[str, tuple[dict[str, Any], list[tuple[BaseException, errors.Failure]]]] = {
    "REDIS": (
        {"host": "localhost"},
        [
            (redis_errors.AuthenticationError("invalid password"), F.AUTH),
            (redis_errors.ResponseError("WRONGPASS invalid username-password pair"), F.AUTH),
            (redis_errors.ResponseError("NOAUTH Authentication required."), F.AUTH),
            (redis_errors.NoPermissionError("NOPERM no permission to run 'xadd'"), F.AUTH),
            (redis_errors.ConnectionError("Error 111 connecting to localhost:6379"), F.UNREACHABLE),
            (redis_errors.TimeoutError("Timeout reading from socket"), F.UNREACHABLE),
            (redis_errors.BusyLoadingError("Redis is loading the dataset"), F.UNREACHABLE),
            (ConnectionResetError(104, "Connection reset by peer"), F.UNREACHABLE),
            (
                redis_errors.ResponseError("NOGROUP No such key 'o' or consumer group 'b'"),
                F.NOT_FOUND,
            ),
            (redis_errors.TryAgainError("TRYAGAIN"), F.THROTTLED),
            (
                redis_errors.ReadOnlyError("READONLY You can't write against a replica."),
                F.THROTTLED,
            ),
            (redis_errors.OutOfMemoryError("OOM command not allowed"), F.THROTTLED),
            (redis_errors.ResponseError("ERR syntax error"), F.INVALID),
        ],
    ),
    "KAFKA": (
        {"brokers": ["localhost:9092"]},
        [
            (kafka_errors.AuthenticationFailedError("SASL handshake failed"), F.AUTH),
            (kafka_errors.SaslAuthenticationFailed(), F.AUTH),
            (kafka_errors.TopicAuthorizationFailedError(), F.AUTH),
            (kafka_errors.GroupAuthorizationFailedError(), F.AUTH),
            (kafka_errors.ClusterAuthorizationFailedError(), F.AUTH),
            (kafka_errors.KafkaConnectionError("Connect call failed"), F.UNREACHABLE),
            (kafka_errors.NoBrokersAvailable(), F.UNREACHABLE),
            (kafka_errors.RequestTimedOutError(), F.UNREACHABLE),
            (ConnectionRefusedError(111, "Connection refused"), F.UNREACHABLE),
            (kafka_errors.UnknownTopicOrPartitionError(), F.NOT_FOUND),
            (kafka_errors.NotLeaderForPartitionError(), F.THROTTLED),
            (kafka_errors.CoordinatorLoadInProgressError(), F.THROTTLED),
            (kafka_errors.InvalidReplicationFactorError(), F.INVALID),
            (kafka_errors.PolicyViolationError(), F.INVALID),
        ],
    ),
    "RABBITMQ": (
        {"host": "localhost"},
        [
            (amqp_errors.ProbableAuthenticationError("ACCESS_REFUSED"), F.AUTH),
            (aiormq_errors.ChannelAccessRefused("ACCESS_REFUSED - no access to vhost"), F.AUTH),
            (aiormq_errors.ConnectionNotAllowed("NOT_ALLOWED - vhost not found"), F.AUTH),
            (amqp_errors.AMQPConnectionError("connection lost"), F.UNREACHABLE),
            (amqp_errors.ChannelInvalidStateError("channel closed"), F.UNREACHABLE),
            (ConnectionRefusedError(111, "Connection refused"), F.UNREACHABLE),
            (amqp_errors.ChannelNotFoundEntity("NOT_FOUND - no exchange 'orders'"), F.NOT_FOUND),
            (
                amqp_errors.DeliveryError(None, pamqp.commands.Basic.Nack(delivery_tag=1)),
                F.THROTTLED,
            ),
            (
                amqp_errors.ChannelPreconditionFailed("PRECONDITION_FAILED - inequivalent arg"),
                F.INVALID,
            ),
        ],
    ),
    "GOOGLE_PUBSUB": (
        {"projectId": "shop"},
        [
            (google_errors.PermissionDenied("caller lacks pubsub.topics.publish"), F.AUTH),
            (google_errors.Unauthenticated("invalid credentials"), F.AUTH),
            (google_auth_errors.RefreshError("token expired"), F.AUTH),
            (google_errors.ServiceUnavailable("connection refused"), F.UNREACHABLE),
            (google_errors.DeadlineExceeded("deadline exceeded"), F.UNREACHABLE),
            (google_auth_errors.TransportError("token server unreachable"), F.UNREACHABLE),
            (google_errors.NotFound("Resource not found (resource=orders)"), F.NOT_FOUND),
            (google_errors.ResourceExhausted("quota exceeded"), F.THROTTLED),
            (google_errors.TooManyRequests("slow down"), F.THROTTLED),
            (google_errors.InvalidArgument("invalid topic id"), F.INVALID),
        ],
    ),
    "AWS_SQS": (
        {"region": "eu-west-1"},
        [
            *[
                (_client_error(code), F.AUTH)
                for code in (
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
                )
            ],
            (botocore_errors.NoCredentialsError(), F.AUTH),
            (
                botocore_errors.EndpointConnectionError(endpoint_url="http://sqs.local"),
                F.UNREACHABLE,
            ),
            (botocore_errors.ConnectTimeoutError(endpoint_url="http://sqs.local"), F.UNREACHABLE),
            (botocore_errors.ReadTimeoutError(endpoint_url="http://sqs.local"), F.UNREACHABLE),
            (_client_error("AWS.SimpleQueueService.NonExistentQueue"), F.NOT_FOUND),
            (_client_error("QueueDoesNotExist"), F.NOT_FOUND),
            (_client_error("ThrottlingException"), F.THROTTLED),
            (_client_error("RequestThrottled"), F.THROTTLED),
            (_client_error("ServiceUnavailable"), F.THROTTLED),
            (_client_error("InvalidParameterValue"), F.INVALID),
            (_client_error("InvalidAttributeName"), F.INVALID),
        ],
    ),
    "NATS": (
        {"servers": ["nats://localhost:4222"]},
        [
            (nats_errors.Error("nats: 'Authorization Violation'"), F.AUTH),
            (nats_errors.AuthorizationError(), F.AUTH),
            (nats_errors.Error("nats: 'User Authentication Expired'"), F.AUTH),
            (nats_errors.Error("nats: 'Permissions Violation for Publish to x'"), F.AUTH),
            (_js_error(js_errors.APIError, 403, 10000), F.AUTH),
            (nats_errors.NoServersError(), F.UNREACHABLE),
            (nats_errors.NoRespondersError(), F.UNREACHABLE),
            (nats_errors.ConnectionClosedError(), F.UNREACHABLE),
            (nats_errors.StaleConnectionError(), F.UNREACHABLE),
            (nats_errors.TimeoutError(), F.UNREACHABLE),
            (ConnectionRefusedError(111, "Connection refused"), F.UNREACHABLE),
            (_js_error(js_errors.NotFoundError, 404, 10059), F.NOT_FOUND),
            (_js_error(js_errors.NotFoundError, 404, 10014), F.NOT_FOUND),
            (js_errors.NoStreamResponseError(), F.NOT_FOUND),
            (_js_error(js_errors.ServiceUnavailableError, 503), F.THROTTLED),
            (_js_error(js_errors.APIError, 400, 10047), F.THROTTLED),
            (_js_error(js_errors.BadRequestError, 400, 10058), F.INVALID),
            (nats_errors.InvalidUserCredentialsError(), F.INVALID),
        ],
    ),
}


def _rows(type_name: str) -> list[Any]:
    _, rows = TABLES[type_name]
    return [
        pytest.param(exc, failure, id=f"{type(exc).__name__}-{failure.name}")
        for exc, failure in rows
    ]


def _check(type_name: str, exc: BaseException, failure: errors.Failure) -> None:
    kind = brokers.kind(type_name)
    classify = importlib.import_module(f"{kind.package}.errors").classify
    assert classify(exc) is failure

    config, _ = TABLES[type_name]
    provider: Any = build_provider(
        models.MessageBrokerTypes(type_name),
        models.BrokerConfig.model_validate(config),
        base.SecretValues(),
    )
    op_class, op_retriable, client_class, client_retriable = EXPECTED[failure]
    on_operator = provider._map(exc, "probing")
    assert type(on_operator) is op_class, on_operator
    assert on_operator.retriable is op_retriable
    assert on_operator.message.startswith(provider.endpoint)

    map_error = importlib.import_module(f"{kind.package}.client").map_error
    on_client = map_error(exc)
    assert type(on_client) is client_class, on_client
    assert on_client.retriable is client_retriable


def test_every_broker_has_a_table() -> None:
    assert set(TABLES) == {kind.type for kind in brokers.kinds()}
    for _, rows in TABLES.values():
        assert {failure for _, failure in rows} >= {F.AUTH, F.UNREACHABLE, F.NOT_FOUND, F.THROTTLED}


@pytest.mark.parametrize(("exc", "failure"), _rows("REDIS"))
def test_redis_errors(exc: BaseException, failure: errors.Failure) -> None:
    _check("REDIS", exc, failure)


@pytest.mark.parametrize(("exc", "failure"), _rows("KAFKA"))
def test_kafka_errors(exc: BaseException, failure: errors.Failure) -> None:
    _check("KAFKA", exc, failure)


@pytest.mark.parametrize(("exc", "failure"), _rows("RABBITMQ"))
def test_rabbitmq_errors(exc: BaseException, failure: errors.Failure) -> None:
    _check("RABBITMQ", exc, failure)


@pytest.mark.parametrize(("exc", "failure"), _rows("GOOGLE_PUBSUB"))
def test_pubsub_errors(exc: BaseException, failure: errors.Failure) -> None:
    _check("GOOGLE_PUBSUB", exc, failure)


@pytest.mark.parametrize(("exc", "failure"), _rows("AWS_SQS"))
def test_sqs_errors(exc: BaseException, failure: errors.Failure) -> None:
    _check("AWS_SQS", exc, failure)


@pytest.mark.parametrize(("exc", "failure"), _rows("NATS"))
def test_nats_errors(exc: BaseException, failure: errors.Failure) -> None:
    _check("NATS", exc, failure)


def test_foreign_exceptions_are_left_to_each_side() -> None:
    """Not an SDK's: the client re-raises it as is, the operator retries it as a refusal."""
    for kind in brokers.kinds():
        classify = importlib.import_module(f"{kind.package}.errors").classify
        assert classify(ValueError("not a broker's")) is None
        map_error = importlib.import_module(f"{kind.package}.client").map_error
        assert map_error(ValueError("not a broker's")) is None
