"""RabbitMQ: aio-pika on both sides (docs/reference.md, "Provider mapping")."""

from ductape_operator.brokers._kind import BrokerKind

KIND = BrokerKind(
    type="RABBITMQ",
    binding_type="rabbitmq",
    title="RabbitMQ",
    package=__name__,
    required=frozenset({"host"}),
    optional=frozenset(
        {"port", "username", "password", "vhost", "tls", "ca", "clientCert", "clientKey"}
    ),
    identity_fields=("host", "port", "vhost"),
    tls_flag="tls",
    required_entries=(("host", "uri"),),
    entries=(
        "host",
        "port",
        "virtual-host",
        "username",
        "password",
        "tls",
        "ca.crt",
        "tls.crt",
        "tls.key",
    ),
    sdk_loggers=("aio_pika", "aiormq"),
    provider="operator:RabbitMQProvider",
)
