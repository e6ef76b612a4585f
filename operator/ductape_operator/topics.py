"""Where a topic lives on one broker: one entry of the connection Secret's `topics.json`
(README.md, "The connection Secret").

The operator side says where it put each topic (`Provider.ensure_topic` returns a
`TopicRoute`) and writes the entries; the client side reads them back into the same
type (`messaging.Binding.topics`), validated by pydantic. pydantic is imported when an
entry is read, not with this module: the messaging client imports without it.
"""

import dataclasses
import functools
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pydantic

    from ductape_operator import models


@dataclasses.dataclass(frozen=True)
class TopicRoute:
    """Where one topic tag lives on a broker: its physical name and its subscriptions'.

    `name` is None only where the broker allows it (`BrokerKind.topic_name_optional`)
    for a topic with subscriptions: then a message is published to every
    subscription's queue.
    """

    #: The topic's tag (the key of its `topics.json` entry).
    tag: str
    name: str | None
    #: Subscription name -> its physical name on the broker.
    subscriptions: Mapping[str, str] = dataclasses.field(default_factory=dict)
    #: Where messages that keep failing go, and after how many deliveries
    #: (docs/messaging.md, "Dead letters and retention"); None: nowhere.
    dead_letter: "models.DeadLetterSpec | None" = None

    def as_json(self) -> dict[str, object]:
        """The `topics.json` entry, dead letters aside (the operator adds those from the spec)."""
        return {"name": self.name, "subscriptions": dict(self.subscriptions)}

    @classmethod
    def from_json(cls, tag: str, entry: Mapping[str, Any]) -> "TopicRoute":
        """The route of one `topics.json` entry; `pydantic.ValidationError` when malformed
        (unknown keys are ignored: a newer operator may write more)."""
        parsed: Any = _entry_model().model_validate(entry)
        return cls(
            tag=tag,
            name=parsed.name,
            subscriptions=dict(parsed.subscriptions),
            dead_letter=parsed.dead_letter,
        )


@functools.cache
def _entry_model() -> "type[pydantic.BaseModel]":
    """The pydantic model of a `topics.json` entry, built on first use."""
    from typing import Annotated

    import pydantic
    from pydantic.alias_generators import to_camel

    from ductape_operator import models

    physical = Annotated[str, pydantic.Field(min_length=1)]

    class Entry(pydantic.BaseModel):
        model_config = pydantic.ConfigDict(
            alias_generator=to_camel, populate_by_name=True, extra="ignore"
        )

        name: physical | None
        subscriptions: Annotated[
            dict[str, physical],
            pydantic.BeforeValidator(lambda value: {} if value is None else value),
        ] = pydantic.Field(default_factory=dict)
        dead_letter: models.DeadLetterSpec | None = None

    return Entry
