"""The MessageBroker API: spec and status as pydantic models.

These models are the single source of the API. The CRD in `crds/` is generated
from them (`make crds`), and the operator validates every resource with them
again before acting, so a resource that slipped past the schema (an older CRD,
a forced write) becomes an `InvalidConfig` condition instead of a crash.

Python attributes are snake_case; the wire names are camelCase aliases.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Annotated, Any, ClassVar

import pydantic
from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.alias_generators import to_camel, to_snake
from pydantic.fields import FieldInfo

from ductape_operator import brokers, schema
from ductape_operator.schema import HOST_MAX_LENGTH as HOST_MAX_LENGTH
from ductape_operator.schema import HOST_PATTERN as HOST_PATTERN
from ductape_operator.schema import HOST_PORT_PATTERN as HOST_PORT_PATTERN
from ductape_operator.schema import OBJECT_NAME_MAX_LENGTH as OBJECT_NAME_MAX_LENGTH
from ductape_operator.schema import OBJECT_NAME_PATTERN as OBJECT_NAME_PATTERN
from ductape_operator.schema import URL_PATTERN as URL_PATTERN
from ductape_operator.schema import ApiModel as _Model
from ductape_operator.schema import Flag as Flag
from ductape_operator.schema import HostPort as HostPort
from ductape_operator.schema import ObjectName as ObjectName
from ductape_operator.schema import Port as Port
from ductape_operator.schema import SecretKeySelector as SecretKeySelector
from ductape_operator.schema import SecretRef as SecretRef

GROUP = "ductape.app"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "MessageBroker"
PLURAL = "messagebrokers"
SINGULAR = "messagebroker"
SHORT_NAMES = ("mb",)
CATEGORIES = ("ductape",)

# Every pattern here is written for both regex engines alike (see `schema`).

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
#: Retention bounds every provider accepts (SQS: 60 s..14 days; Pub/Sub topics: 10 min..31 days).
MIN_RETENTION_SECONDS = 600
MAX_RETENTION_SECONDS = 1209600
#: Delivery attempts before a message is dead-lettered: Pub/Sub's range, which every provider takes.
MIN_DELIVERY_ATTEMPTS = 5
MAX_DELIVERY_ATTEMPTS = 100

Slug = Annotated[str, Field(pattern=SLUG_PATTERN, min_length=1, max_length=SLUG_MAX_LENGTH)]


class _BrokerType(enum.StrEnum):
    """The provider an environment runs on."""

    @property
    def kind(self) -> brokers.BrokerKind:
        """The registered broker of this type."""
        return brokers.kind(self.value)

    @property
    def binding_type(self) -> str:
        """The `type` entry of the Service Binding Secret."""
        return self.kind.binding_type


if TYPE_CHECKING:
    MessageBrokerTypes = _BrokerType
else:
    #: One member per registered broker (`brokers._PACKAGES`), named and valued by its
    #: CRD `type`: KAFKA, REDIS, ...
    MessageBrokerTypes = _BrokerType(
        "MessageBrokerTypes",
        [(kind.type, kind.type) for kind in brokers.kinds()],
        module=__name__,
        qualname="MessageBrokerTypes",
    )
    MessageBrokerTypes.__doc__ = _BrokerType.__doc__


class DeletionPolicy(enum.StrEnum):
    """What happens on the broker when an env, a topic or the resource goes away."""

    RETAIN = "Retain"
    DELETE = "Delete"


_TRUST_FIELDS = schema.TrustFields.model_fields


def _tls_switch(common: str, other: str) -> str:
    """How the types that speak TLS switch it on: the switch most of them share, then
    the others by type, e.g. `tls (ssl on KAFKA)` for `{flag}` and `{flag} on {types}`."""
    owners: dict[str, list[str]] = {}
    for kind in brokers.kinds():
        if kind.tls_flag is not None:
            owners.setdefault(kind.tls_flag, []).append(kind.type)
    shared = max(owners, key=lambda flag: len(owners[flag]))
    others = [
        other.format(flag=flag, types=" or ".join(types))
        for flag, types in owners.items()
        if flag != shared
    ]
    return common.format(flag=shared) + (f" ({', '.join(others)})" if others else "")


def _build_broker_config() -> type[schema.ConfigModel]:
    """The union of every registered broker's config model: what `config` may hold.

    Fields come in registry order, each broker's own first, then the trust fields
    (`schema.TrustFields`) after the last broker that has them. A field several
    brokers share must have the same type and constraints in each; its description
    names them all, grouped by what each says of it
    (`REDIS (default 6379), RABBITMQ (default 5672): server port.`).
    """
    models_ = [(kind, kind.config_module()) for kind in brokers.kinds()]
    last_trusting = max(
        i for i, (_, module) in enumerate(models_) if issubclass(module.MODEL, schema.TrustFields)
    )
    users: dict[str, list[tuple[brokers.BrokerKind, FieldInfo, str | None]]] = {}
    order: list[str] = []
    for index, (kind, module) in enumerate(models_):
        notes: Mapping[str, str] = getattr(module, "NOTES", {})
        for name, info in module.MODEL.model_fields.items():
            users.setdefault(name, []).append((kind, info, notes.get(info.alias or name)))
            if name not in _TRUST_FIELDS and name not in order:
                order.append(name)
        if index == last_trusting:
            order.extend(_TRUST_FIELDS)
    fields: dict[str, Any] = {}
    for name in order:
        (first_kind, first, _), *others = users[name]
        for kind, info, _ in others:
            # repr: not every constraint object of pydantic compares by value
            if repr((info.annotation, info.metadata)) != repr((first.annotation, first.metadata)):
                raise TypeError(
                    f"config.{info.alias}: {kind.type} and {first_kind.type} define it differently"
                )
        by_text: dict[str, list[str]] = {}
        for kind, info, note in users[name]:
            text = (info.description or "").replace(
                "{tls_flag}", _tls_switch("{flag}", "{flag} on {types}")
            )
            by_text.setdefault(text, []).append(kind.type + (f" ({note})" if note else ""))
        merged = copy.copy(first)
        merged.description = " ".join(
            f"{', '.join(owners)}: {text}" for text, owners in by_text.items()
        )
        fields[name] = (first.annotation, merged)
    return pydantic.create_model(
        "BrokerConfig",
        __base__=schema.ConfigModel,
        __module__=__name__,
        __doc__=_BROKER_CONFIG_DOC,
        **fields,
    )


_BROKER_CONFIG_DOC = """Connection settings of one environment.

    One object carries the union of every broker's fields (each broker's own model is
    in `brokers/<name>/config.py`); which of them belong to which `type` is a rule
    (`FIELDS_BY_TYPE`) that the CRD states as CEL and the operator checks again here.
    """

if TYPE_CHECKING:

    class BrokerConfig(schema.ConfigModel):
        """The union of the brokers' config models, built at import (`_build_broker_config`)."""

        def __getattr__(self, name: str) -> Any: ...

else:
    BrokerConfig = _build_broker_config()


#: The trust and client-certificate fields (wire names), which need TLS switched on.
TLS_FIELDS = ("ca", "clientCert", "clientKey")
#: The messages of the TLS rules, the CRD's CEL and `EnvSpec` alike.
CLIENT_PAIR_MESSAGE = "config.clientCert and config.clientKey must be set together"
NEEDS_TLS_MESSAGE = "config.ca, clientCert and clientKey need TLS: " + _tls_switch(
    "{flag}: true", "{flag}: true on {types}"
)

#: Which config fields (wire names) each type requires and allows. The CRD's
#: CEL rules are generated from this table, and `EnvSpec` checks it again.
FIELDS_BY_TYPE: dict[MessageBrokerTypes, tuple[frozenset[str], frozenset[str]]] = {
    MessageBrokerTypes(kind.type): (kind.required, kind.optional) for kind in brokers.kinds()
}


def _either(values: Iterable[str]) -> str:
    """`a, b or c`."""
    *rest, last = values
    return f"{', '.join(rest)} or {last}" if rest else last


def _unique(values: list[str], what: str) -> None:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"duplicate {what} {value!r}")
        seen.add(value)


class EnvSpec(_Model):
    """One environment (prd, dev, ...) and the broker it runs on."""

    slug: Annotated[
        Slug,
        Field(description="Environment name (a DNS label), unique in this resource."),
    ]
    type: Annotated[
        MessageBrokerTypes,
        Field(
            description=(
                f"The provider of this environment: {_either(k.type for k in brokers.kinds())}."
                " Changing it moves the environment to another broker."
            )
        ),
    ]
    config: Annotated[
        BrokerConfig,
        Field(description="Connection settings; which fields apply depends on `type`."),
    ]
    secret_name: Annotated[
        ObjectName | None,
        Field(description="Name of the connection Secret (default <metadata.name>-<slug>)."),
    ] = None

    def broker_identity(self) -> str:
        """Which broker this env points at, credentials aside (`BrokerKind.identity`).

        Two envs with the same identity are the same broker: changing only a
        password or a client id is not a move, and leaves nothing behind.
        """
        values = self.config.model_dump(by_alias=True, exclude_none=True)
        return self.type.kind.identity(values)

    @model_validator(mode="after")
    def _config_matches_type(self) -> EnvSpec:
        problems = config_problems(self.type, self.config.set_fields())
        if not problems:
            problems = tls_problems(self.type, self.config)
        if problems:
            raise ValueError("; ".join(problems))
        return self


def config_problems(type_: MessageBrokerTypes, present: set[str]) -> list[str]:
    """What is wrong with a config setting the `present` fields for `type_`.

    The messages are the ones the CRD's CEL rules give, word for word.
    """
    required, optional = FIELDS_BY_TYPE[type_]
    problems = [
        f"config.{field} is required when type is {type_.value}"
        for field in sorted(required - present)
    ]
    problems += [
        f"config.{field} is not allowed when type is {type_.value}"
        for field in sorted(present - required - optional)
    ]
    return problems


def tls_problems(type_: MessageBrokerTypes, config: BrokerConfig) -> list[str]:
    """What is wrong with a config's trust fields; the CRD's CEL rules say the same."""
    problems = []
    if (config.client_cert is None) != (config.client_key is None):
        problems.append(CLIENT_PAIR_MESSAGE)
    uses = config.ca is not None or config.client_cert is not None or config.client_key is not None
    flag = type_.kind.tls_flag
    tls_on = flag is not None and getattr(config, to_snake(flag)) is True
    if uses and not tls_on:
        problems.append(NEEDS_TLS_MESSAGE)
    return problems


class DeadLetterSpec(_Model):
    """Where a topic's messages go when they keep failing (docs/messaging.md, "Dead letters")."""

    topic: Annotated[
        Slug,
        Field(
            description=(
                "Tag of another topic of this resource that receives the dead letters; it"
                " has exactly one subscription and no deadLetter of its own."
            )
        ),
    ]
    max_delivery_attempts: Annotated[
        int,
        Field(
            ge=MIN_DELIVERY_ATTEMPTS,
            le=MAX_DELIVERY_ATTEMPTS,
            strict=True,
            description=(
                "Deliveries to one subscription without an ack (5 to 100) before the message"
                " moves to the dead-letter topic."
            ),
        ),
    ]


class TopicSpec(_Model):
    """A topic to create in every environment, with its subscriptions."""

    tag: Annotated[
        Slug,
        Field(
            description=(
                "Topic tag (a DNS label), unique in this resource; applications publish"
                " and subscribe by it."
            )
        ),
    ]
    name: Annotated[
        str | None,
        Field(
            min_length=1,
            max_length=PHYSICAL_NAME_MAX_LENGTH,
            pattern=PHYSICAL_NAME_PATTERN,
            description="Physical name on the broker (default: the tag).",
        ),
    ] = None
    description: Annotated[
        str | None, Field(max_length=1024, description="What flows through this topic.")
    ] = None
    partitions: Annotated[
        int | None,
        Field(
            ge=1,
            le=10000,
            strict=True,
            description="KAFKA only: partition count (default 1); other providers ignore it.",
        ),
    ] = None
    retention_seconds: Annotated[
        int | None,
        Field(
            ge=MIN_RETENTION_SECONDS,
            le=MAX_RETENTION_SECONDS,
            strict=True,
            description=(
                "How long an unconsumed message is kept, in seconds (600 to 1209600);"
                " default: the broker's own."
            ),
        ),
    ] = None
    dead_letter: Annotated[
        DeadLetterSpec | None,
        Field(description="Move messages that keep failing to another topic of this resource."),
    ] = None
    subscriptions: Annotated[
        list[Slug],
        Field(
            max_length=MAX_SUBSCRIPTIONS,
            description=(
                "Subscription names (DNS labels), unique in this topic; each receives every"
                " message of the topic, and consumers within one subscription compete."
            ),
            json_schema_extra={"x-kubernetes-list-type": "set"},
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

    name: Annotated[
        str, Field(min_length=1, max_length=253, description="Display name (required).")
    ]
    tag: Annotated[
        Slug,
        Field(
            description=(
                "Tag of this broker (a DNS label), unique in the namespace; it cannot"
                " change. A topic's full tag is <tag>:<topic tag>."
            )
        ),
    ]
    description: Annotated[
        str | None, Field(max_length=4096, description="What this broker is for.")
    ] = None
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
        Field(
            min_length=1,
            max_length=MAX_ENVS,
            description="Environments (1 to 32), keyed by slug; each on its own broker.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["slug"],
            },
        ),
    ]
    topics: Annotated[
        list[TopicSpec],
        Field(
            max_length=MAX_TOPICS,
            description="Topics to create in every environment, keyed by tag.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["tag"],
            },
        ),
    ] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_keys(self) -> MessageBrokerSpec:
        _unique([env.slug for env in self.envs], "env slug")
        _unique([topic.tag for topic in self.topics], "topic tag")
        problems = dead_letter_problems(self.topics)
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def topic(self, tag: str) -> TopicSpec | None:
        return next((topic for topic in self.topics if topic.tag == tag), None)

    def env(self, slug: str) -> EnvSpec | None:
        return next((env for env in self.envs if env.slug == slug), None)


#: `TopicStatus.retention` of a topic without `retentionSeconds`.
BROKER_DEFAULT_RETENTION = "broker default"


def retention_in_force(topic: TopicSpec) -> str:
    """What `TopicStatus.retention` says for a topic."""
    if topic.retention_seconds is None:
        return BROKER_DEFAULT_RETENTION
    return f"{topic.retention_seconds}s"


#: The CRD's CEL messages for dead-letter declarations, word for word (crdgen.py).
DEAD_LETTER_NOT_A_TOPIC = "deadLetter.topic must be the tag of a topic of this resource"
DEAD_LETTER_OWN_TOPIC = "deadLetter.topic must name another topic, not its own"
DEAD_LETTER_CHAINED = "deadLetter.topic must name a topic that has no deadLetter of its own"
DEAD_LETTER_SUBSCRIPTIONS = "a topic named by deadLetter.topic must have exactly one subscription"


def dead_letter_problems(topics: list[TopicSpec]) -> list[str]:
    """What is wrong with the topics' dead-letter declarations, each naming its topic."""
    by_tag = {topic.tag: topic for topic in topics}
    problems: list[str] = []
    for index, topic in enumerate(topics):
        if topic.dead_letter is None:
            continue
        where = f"topics[{index}].deadLetter.topic ({topic.tag!r})"
        target = by_tag.get(topic.dead_letter.topic)
        if topic.dead_letter.topic == topic.tag:
            problems.append(f"{where}: {DEAD_LETTER_OWN_TOPIC}")
        elif target is None:
            problems.append(f"{where}: {DEAD_LETTER_NOT_A_TOPIC}")
        elif target.dead_letter is not None:
            problems.append(f"{where}: {DEAD_LETTER_CHAINED}")
        elif len(target.subscriptions) != 1:
            problems.append(f"{where}: {DEAD_LETTER_SUBSCRIPTIONS}")
    return problems


# --- status -----------------------------------------------------------------


class ConditionStatus(enum.StrEnum):
    """Status of a condition."""

    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Phase(enum.StrEnum):
    """Where an environment stands."""

    PENDING = "Pending"
    PROVISIONING = "Provisioning"
    READY = "Ready"
    DEGRADED = "Degraded"
    FAILED = "Failed"


_TIMESTAMP: dict[str, Any] = {"format": "date-time"}


class Condition(_Model):
    """A metav1.Condition."""

    type: Annotated[
        str,
        Field(
            min_length=1,
            max_length=316,
            pattern=(
                r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$"
            ),
            description="Type of condition: Ready, Provisioned or Healthy.",
        ),
    ]
    status: Annotated[ConditionStatus, Field(description="True, False or Unknown.")]
    reason: Annotated[
        str,
        Field(
            min_length=1,
            max_length=1024,
            pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$",
            description="Why, in CamelCase: AllEnvsReady, Provisioning, SecretNotFound, ...",
        ),
    ]
    message: Annotated[
        str, Field(max_length=32768, description="Details for humans; never a credential.")
    ] = ""
    last_transition_time: Annotated[
        str,
        Field(
            description="When the status last changed (RFC 3339).",
            json_schema_extra=_TIMESTAMP,
        ),
    ]
    observed_generation: Annotated[
        int | None,
        Field(ge=0, description="The metadata.generation this condition was set for."),
    ] = None


class TopicStatus(_Model):
    """A topic as provisioned in one environment."""

    tag: Annotated[str, Field(description="Topic tag.")]
    name: Annotated[
        str | None, Field(description="Where the topic lives on this env's broker.")
    ] = None
    ready: Annotated[bool, Field(description="The topic and its subscriptions exist.")] = False
    retention: Annotated[
        str | None,
        Field(
            description=(
                'Retention in force: "<seconds>s" as declared, or "broker default" without'
                " retentionSeconds."
            )
        ),
    ] = None


class EnvStatus(_Model):
    """What the operator observed for one environment."""

    slug: Annotated[str, Field(description="Environment slug.")]
    type: Annotated[MessageBrokerTypes, Field(description="The provider provisioned.")]
    phase: Annotated[Phase, Field(description="Pending, Provisioning, Ready, Degraded or Failed.")]
    endpoint: Annotated[
        str | None, Field(description="Where the broker is; never a credential.")
    ] = None
    secret_name: Annotated[
        str | None, Field(description="Name of the connection Secret of this environment.")
    ] = None
    topics: Annotated[
        list[TopicStatus],
        Field(
            description="Topics of this environment.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["tag"],
            },
        ),
    ] = Field(default_factory=list)
    last_transition_time: Annotated[
        str | None,
        Field(description="When the phase last changed (RFC 3339).", json_schema_extra=_TIMESTAMP),
    ] = None
    message: Annotated[str | None, Field(description="Details for humans.")] = None


class Binding(_Model):
    """Service Binding spec: the Secret of a Provisioned Service."""

    name: Annotated[str, Field(description="Name of the connection Secret.")]


class MessageBrokerStatus(_Model):
    """What the operator observed; written only when it changes."""

    observed_generation: Annotated[
        int | None, Field(description="The metadata.generation last reconciled.")
    ] = None
    summary: Annotated[
        str | None, Field(description='Each env as slug:TYPE, e.g. "prd:RABBITMQ dev:REDIS".')
    ] = None
    conditions: Annotated[
        list[Condition],
        Field(
            description="Ready, Provisioned and Healthy, in metav1.Condition shape.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
            },
        ),
    ] = Field(default_factory=list)
    envs: Annotated[
        list[EnvStatus],
        Field(
            description="Per environment: phase, endpoint, connection Secret and topics.",
            json_schema_extra={
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["slug"],
            },
        ),
    ] = Field(default_factory=list)
    binding: Annotated[
        Binding | None,
        Field(description="Service Binding: the connection Secret when one env is reconciled."),
    ] = None
    applied: Annotated[
        str | None,
        Field(
            description="The operator's record of what it provisioned per env (JSON): where"
            " each env's topics are, for moves and removals. Not for users to edit."
        ),
    ] = None
    handled_spec: Annotated[
        str | None,
        Field(
            description="The spec last reconciled to the end (JSON): a change of spec is a"
            " difference from it. Not for users to edit."
        ),
    ] = None

    model_config: ClassVar[ConfigDict] = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="ignore", frozen=True
    )


def parse_spec(raw: Any) -> MessageBrokerSpec:
    """Validate a raw `spec` mapping; raises `pydantic.ValidationError`."""
    return MessageBrokerSpec.model_validate(raw)


def _path(loc: tuple[int | str, ...]) -> str:
    path = "spec"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem, each naming the field path in wire names (spec.envs[0].config)."""
    lines = []
    for err in exc.errors():
        message = err["msg"].removeprefix("Value error, ")
        lines.append(f"{_path(err['loc'])}: {message}")
    return "; ".join(lines)


@dataclasses.dataclass(frozen=True)
class BrokerRef:
    """Identity of one MessageBroker object."""

    namespace: str
    name: str
    uid: str

    def owner_reference(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "name": self.name,
            "uid": self.uid,
            "controller": True,
            "blockOwnerDeletion": True,
        }
