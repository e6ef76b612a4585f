"""NATS JetStream: nats-py on both sides (docs/reference.md, "NATS").

A topic is a stream whose one subject is the topic's physical name, a subscription
a durable pull consumer on it.
"""

from ductape_operator.brokers._kind import BrokerKind

KIND = BrokerKind(
    type="NATS",
    binding_type="nats",
    title="NATS JetStream",
    package=__name__,
    required=frozenset({"servers"}),
    optional=frozenset(
        {"username", "password", "credentials", "tls", "ca", "clientCert", "clientKey"}
    ),
    identity_fields=("servers",),
    tls_flag="tls",
    required_entries=(("servers", "uri"),),
    entries=("servers", "username", "password", "credentials", "ca.crt", "tls.crt", "tls.key"),
    sdk_loggers=("nats",),
    provider="operator:NatsProvider",
)
