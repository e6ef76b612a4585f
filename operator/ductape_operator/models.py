"""The MessageBroker API: spec and status as pydantic models.

These models are the single source of the API. The CRD in `crds/` is generated
from them (`make crds`), and the operator validates every resource with them
again before acting, so a resource that slipped past the schema (an older CRD,
a forced write) becomes an `InvalidConfig` condition instead of a crash.

Python attributes are snake_case; the wire names are camelCase aliases.
"""

from __future__ import annotations

import enum
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)
from pydantic.alias_generators import to_camel

GROUP = "ductape.app"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MessageBroker"
PLURAL = "messagebrokers"
SINGULAR = "messagebroker"
SHORT_NAMES = ("mb",)
CATEGORIES = ("ductape",)

#: Slugs, tags and subscription names: a DNS label.
SLUG_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
SLUG_MAX_LENGTH = 63
#: Physical topic names must be valid on every provider at once (Kafka topic,
#: Redis key, AMQP exchange, Pub/Sub topic id, SQS queue name once dots become dashes).
PHYSICAL_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9._-]*$"
PHYSICAL_NAME_MAX_LENGTH = 200
MAX_ENVS = 32
MAX_TOPICS = 256
MAX_SUBSCRIPTIONS = 64

Slug = Annotated[str, Field(pattern=SLUG_PATTERN, min_length=1, max_length=SLUG_MAX_LENGTH)]


class _Model(BaseModel):
    """Base for API objects: camelCase on the wire, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        frozen=True,
        use_enum_values=False,
    )


class MessageBrokerTypes(enum.StrEnum):
    """The provider an environment runs on."""

    KAFKA = "KAFKA"
    REDIS = "REDIS"
    RABBITMQ = "RABBITMQ"
    GOOGLE_PUBSUB = "GOOGLE_PUBSUB"
    AWS_SQS = "AWS_SQS"

    @property
    def binding_type(self) -> str:
        """The `type` entry of the Service Binding Secret."""
        return _BINDING_TYPES[self]


_BINDING_TYPES = {
    MessageBrokerTypes.KAFKA: "kafka",
    MessageBrokerTypes.REDIS: "redis",
    MessageBrokerTypes.RABBITMQ: "rabbitmq",
    MessageBrokerTypes.GOOGLE_PUBSUB: "google-pubsub",
    MessageBrokerTypes.AWS_SQS: "aws-sqs",
}


class DeletionPolicy(enum.StrEnum):
    """What happens on the broker when an env, a topic or the resource goes away."""

    RETAIN = "Retain"
    DELETE = "Delete"


class SaslMechanism(enum.StrEnum):
    PLAIN = "plain"
    SCRAM_SHA_256 = "scram-sha-256"
    SCRAM_SHA_512 = "scram-sha-512"


class SecretKeySelector(_Model):
    """A key of a Secret in the MessageBroker's own namespace."""

    name: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            description="Name of a Secret in the MessageBroker's namespace.",
        ),
    ]
    key: Annotated[
        str,
        Field(
            min_length=1,
            max_length=253,
            pattern=r"^[-._a-zA-Z0-9]+$",
            description="Key within that Secret.",
        ),
    ]


class SecretRef(_Model):
    """A secret value: never a plain string, always a reference to a Secret key.

    There is deliberately no namespace field: a tenant can never make the
    operator read another namespace's Secret.
    """

    secret_key_ref: Annotated[
        SecretKeySelector, Field(description="The Secret key holding the value.")
    ]


class KafkaSasl(_Model):
    """SASL authentication for Kafka."""

    mechanism: Annotated[SaslMechanism, Field(description="SASL mechanism.")]
    username: Annotated[str, Field(min_length=1, max_length=253, description="SASL username.")]
    password: Annotated[SecretRef, Field(description="SASL password, from a Secret.")]


def _check_host_port(value: str) -> str:
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{value!r} is not host:port")
    return value


HostPort = Annotated[
    str,
    Field(min_length=3, max_length=261, pattern=r"^[^\s:/]+:[0-9]{1,5}$"),
    AfterValidator(_check_host_port),
]
Port = Annotated[int, Field(ge=1, le=65535)]


class BrokerConfig(_Model):
    """Connection settings of one environment.

    One object carries the union of every provider's fields; which of them
    belong to which `type` is a rule (`FIELDS_BY_TYPE`) that the CRD states as
    CEL and the operator checks again here.
    """

    # Kafka
    brokers: Annotated[
        list[HostPort] | None,
        Field(min_length=1, max_length=64, description="KAFKA: bootstrap servers, host:port."),
    ] = None
    client_id: Annotated[
        str | None, Field(max_length=253, description="KAFKA: client id the operator uses.")
    ] = None
    group_id: Annotated[
        str | None,
        Field(max_length=253, description="KAFKA: default consumer group id for applications."),
    ] = None
    ssl: Annotated[bool | None, Field(description="KAFKA: connect with TLS.")] = None
    sasl: Annotated[KafkaSasl | None, Field(description="KAFKA: SASL authentication.")] = None
    replication_factor: Annotated[
        int | None,
        Field(ge=1, le=32, description="KAFKA: replication factor of created topics."),
    ] = None
    # Redis and RabbitMQ
    host: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=253,
            pattern=r"^[^\s:/]+$",
            description="REDIS, RABBITMQ: server host name or address.",
        ),
    ] = None
    port: Annotated[
        Port | None,
        Field(description="REDIS (default 6379), RABBITMQ (default 5672): server port."),
    ] = None
    username: Annotated[
        str | None, Field(max_length=253, description="REDIS, RABBITMQ: user name.")
    ] = None
    password: Annotated[
        SecretRef | None, Field(description="REDIS, RABBITMQ: password, from a Secret.")
    ] = None
    db: Annotated[
        int | None, Field(ge=0, le=1023, description="REDIS: database number (default 0).")
    ] = None
    tls: Annotated[bool | None, Field(description="REDIS, RABBITMQ: connect with TLS.")] = None
    vhost: Annotated[
        str | None,
        Field(min_length=1, max_length=253, description='RABBITMQ: virtual host (default "/").'),
    ] = None
    # Google Pub/Sub
    project_id: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=100,
            pattern=r"^[a-z][-a-z0-9]*[a-z0-9]$",
            description="GOOGLE_PUBSUB: Google Cloud project id.",
        ),
    ] = None
    credentials: Annotated[
        SecretRef | None,
        Field(description="GOOGLE_PUBSUB: service-account JSON key, from a Secret."),
    ] = None
    emulator_host: Annotated[
        HostPort | None,
        Field(description="GOOGLE_PUBSUB: host:port of a Pub/Sub emulator."),
    ] = None
    # AWS SQS
    region: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=64,
            pattern=r"^[a-z0-9-]+$",
            description="AWS_SQS: AWS region, e.g. eu-west-1.",
        ),
    ] = None
    endpoint: Annotated[
        str | None,
        Field(
            max_length=2048,
            pattern=r"^https?://[^\s/]+(/.*)?$",
            description="AWS_SQS: endpoint URL, for SQS-compatible servers.",
        ),
    ] = None
    access_key_id: Annotated[
        SecretRef | None, Field(description="AWS_SQS: access key id, from a Secret.")
    ] = None
    secret_access_key: Annotated[
        SecretRef | None, Field(description="AWS_SQS: secret access key, from a Secret.")
    ] = None

    def set_fields(self) -> set[str]:
        """Wire names of the fields this config sets."""
        return {
            self.model_fields[name].alias or name
            for name in self.model_fields_set
            if getattr(self, name) is not None
        }

    def secret_refs(self) -> list[SecretKeySelector]:
        """Every Secret key this config references."""
        refs = [self.password, self.credentials, self.access_key_id, self.secret_access_key]
        if self.sasl is not None:
            refs.append(self.sasl.password)
        return [ref.secret_key_ref for ref in refs if ref is not None]


#: Which config fields (wire names) each type requires and allows. The CRD's
#: CEL rules are generated from this table, and `EnvSpec` checks it again.
FIELDS_BY_TYPE: dict[MessageBrokerTypes, tuple[frozenset[str], frozenset[str]]] = {
    MessageBrokerTypes.KAFKA: (
        frozenset({"brokers"}),
        frozenset({"clientId", "groupId", "ssl", "sasl", "replicationFactor"}),
    ),
    MessageBrokerTypes.REDIS: (
        frozenset({"host"}),
        frozenset({"port", "username", "password", "db", "tls"}),
    ),
    MessageBrokerTypes.RABBITMQ: (
        frozenset({"host"}),
        frozenset({"port", "username", "password", "vhost", "tls"}),
    ),
    MessageBrokerTypes.GOOGLE_PUBSUB: (
        frozenset({"projectId"}),
        frozenset({"credentials", "emulatorHost"}),
    ),
    MessageBrokerTypes.AWS_SQS: (
        frozenset({"region"}),
        frozenset({"endpoint", "accessKeyId", "secretAccessKey"}),
    ),
}


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


class EnvSpec(_Model):
    """One environment (prd, dev, ...) and the broker it runs on."""

    slug: Annotated[Slug, Field(description="Environment name, unique in this resource.")]
    type: Annotated[MessageBrokerTypes, Field(description="The provider of this environment.")]
    config: Annotated[
        BrokerConfig,
        Field(description="Connection settings; which fields apply depends on `type`."),
    ]
    secret_name: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=253,
            pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
            description="Name of the connection Secret (default <metadata.name>-<slug>).",
        ),
    ] = None

    @model_validator(mode="after")
    def _config_matches_type(self) -> EnvSpec:
        required, optional = FIELDS_BY_TYPE[self.type]
        present = self.config.set_fields()
        missing = sorted(required - present)
        if missing:
            raise ValueError(
                f"config.{missing[0]} is required when type is {self.type.value}"
            )
        foreign = sorted(present - required - optional)
        if foreign:
            raise ValueError(
                f"config.{foreign[0]} is not allowed when type is {self.type.value}"
            )
        return self


class TopicSpec(_Model):
    """A topic to create in every environment, with its subscriptions."""

    tag: Annotated[Slug, Field(description="Topic tag, unique in this resource.")]
    name: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=PHYSICAL_NAME_MAX_LENGTH,
            pattern=PHYSICAL_NAME_PATTERN,
            description="Physical name on the broker (default: the tag).",
        ),
    ] = None
    description: Annotated[str | None, Field(max_length=1024)] = None
    partitions: Annotated[
        int | None,
        Field(ge=1, le=10000, description="KAFKA only: partition count (default 1)."),
    ] = None
    subscriptions: Annotated[
        list[Slug],
        Field(
            max_length=MAX_SUBSCRIPTIONS,
            description="Subscription names; each receives every message of the topic.",
        ),
    ] = Field(default_factory=list)

    @property
    def physical_name(self) -> str:
        return self.name or self.tag

    @model_validator(mode="after")
    def _unique_subscriptions(self) -> TopicSpec:
        _unique(self.subscriptions, f"subscription in topic {self.tag!r}:")
        return self


class MessageBrokerSpec(_Model):
    """A message broker, declared once, with a configuration per environment."""

    name: Annotated[str, Field(min_length=1, max_length=253, description="Display name.")]
    tag: Annotated[
        Slug,
        Field(description="Unique tag of this broker in the namespace; cannot change."),
    ]
    description: Annotated[str | None, Field(max_length=4096)] = None
    deletion_policy: Annotated[
        DeletionPolicy,
        Field(
            description=(
                "Retain (default) never deletes anything on a broker; Delete removes the"
                " topics and subscriptions of a removed env, topic or resource."
            )
        ),
    ] = DeletionPolicy.RETAIN
    envs: Annotated[
        list[EnvSpec],
        Field(min_length=1, max_length=MAX_ENVS, description="Environments, keyed by slug."),
    ]
    topics: Annotated[
        list[TopicSpec],
        Field(max_length=MAX_TOPICS, description="Topics to create in every environment."),
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_keys(self) -> MessageBrokerSpec:
        _unique([env.slug for env in self.envs], "env slug")
        _unique([topic.tag for topic in self.topics], "topic tag")
        return self

    def env(self, slug: str) -> EnvSpec | None:
        return next((env for env in self.envs if env.slug == slug), None)


# --- status -----------------------------------------------------------------


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Phase(enum.StrEnum):
    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


class Condition(_Model):
    """A metav1.Condition."""

    type: str
    status: ConditionStatus
    reason: Annotated[str, Field(pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$")]
    message: str = ""
    last_transition_time: str
    observed_generation: int | None = None


class TopicStatus(_Model):
    tag: str
    name: str | None = None
    ready: bool = False


class EnvStatus(_Model):
    slug: str
    type: MessageBrokerTypes
    phase: Phase
    endpoint: Annotated[str | None, Field(description="Where the broker is; never a credential.")]
    secret_name: str | None = None
    topics: list[TopicStatus] = Field(default_factory=list)
    last_transition_time: str | None = None
    message: str | None = None


class Binding(_Model):
    """Service Binding spec: the Secret of a Provisioned Service."""

    name: str


class MessageBrokerStatus(_Model):
    observed_generation: int | None = None
    summary: str | None = None
    conditions: list[Condition] = Field(default_factory=list)
    envs: list[EnvStatus] = Field(default_factory=list)
    binding: Binding | None = None

    model_config: ClassVar[ConfigDict] = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


def parse_spec(raw: Any) -> MessageBrokerSpec:
    """Validate a raw `spec` mapping; raises `pydantic.ValidationError`."""
    return MessageBrokerSpec.model_validate(raw)


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field path in wire names."""
    lines = []
    for err in exc.errors():
        path = "spec." + ".".join(str(part) for part in err["loc"]) if err["loc"] else "spec"
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{path}: {message}")
    return "; ".join(lines)
