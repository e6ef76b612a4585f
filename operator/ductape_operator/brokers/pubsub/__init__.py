"""Google Cloud Pub/Sub: google-cloud-pubsub (docs/reference.md, "Provider mapping")."""

from ductape_operator.brokers._kind import BrokerKind

KIND = BrokerKind(
    type="GOOGLE_PUBSUB",
    binding_type="google-pubsub",
    title="Google Pub/Sub",
    package=__name__,
    required=frozenset({"projectId"}),
    optional=frozenset({"credentials", "emulatorHost"}),
    identity_fields=("projectId", "emulatorHost"),
    required_entries=(("project-id",),),
    entries=("project-id", "emulator-host", "credentials.json"),
    dead_letter_marks="client:dead_letter_marks",
    provider="operator:PubSubProvider",
)
