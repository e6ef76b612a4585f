"""Redis streams: redis-py on both sides (docs/reference.md, "Provider mapping")."""

from ductape_operator.brokers._kind import BrokerKind

KIND = BrokerKind(
    type="REDIS",
    binding_type="redis",
    title="Redis",
    package=__name__,
    required=frozenset({"host"}),
    optional=frozenset(
        {"port", "username", "password", "db", "tls", "ca", "clientCert", "clientKey"}
    ),
    identity_fields=("host", "port", "db"),
    identity_defaults={"db": "0"},
    tls_flag="tls",
    required_entries=(("host", "uri"),),
    entries=(
        "host",
        "port",
        "database",
        "username",
        "password",
        "tls",
        "ca.crt",
        "tls.crt",
        "tls.key",
    ),
    provider="operator:RedisProvider",
)
