"""Apache Kafka: aiokafka on both sides (docs/reference.md, "Provider mapping")."""

from ductape_operator.brokers._kind import BrokerKind

KIND = BrokerKind(
    type="KAFKA",
    binding_type="kafka",
    title="Kafka",
    package=__name__,
    required=frozenset({"brokers"}),
    optional=frozenset(
        {"clientId", "groupId", "ssl", "sasl", "replicationFactor", "ca", "clientCert", "clientKey"}
    ),
    identity_fields=("brokers",),
    tls_flag="ssl",
    required_entries=(("bootstrap-servers",),),
    entries=(
        "bootstrap-servers",
        "security-protocol",
        "sasl-mechanism",
        "username",
        "password",
        "ssl",
        "ca.crt",
        "tls.crt",
        "tls.key",
    ),
    sdk_loggers=("aiokafka",),
    provider="operator:KafkaProvider",
)
