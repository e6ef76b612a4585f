"""AWS SQS: aioboto3 on both sides (docs/reference.md, "Provider mapping")."""

from ductape_operator.brokers._kind import BrokerKind

KIND = BrokerKind(
    type="AWS_SQS",
    binding_type="aws-sqs",
    title="AWS SQS",
    package=__name__,
    required=frozenset({"region"}),
    optional=frozenset({"endpoint", "accessKeyId", "secretAccessKey"}),
    identity_fields=("region", "endpoint"),
    required_entries=(("region",),),
    entries=("region", "endpoint", "access-key-id", "secret-access-key"),
    topic_name_optional=True,
    sdk_loggers=("botocore", "aiobotocore"),
    provider="operator:SQSProvider",
)
