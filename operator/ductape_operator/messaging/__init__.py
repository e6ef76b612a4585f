"""The application-side messaging client: publish and consume by topic tag.

    pip install ductape-operator[client]

    from ductape_operator.messaging import Broker

    async with Broker.from_binding() as broker:
        await broker.publish("order-created", {"order": 42}, headers={"source": "shop"})
        async with broker.subscribe("order-created", "billing") as messages:
            async for message in messages:
                handle(message.json())
                await message.ack()

The broker, its address and every physical name come from the connection
Secret the operator writes (a service binding); the application names only
topic tags and subscription names, so the same code runs on Kafka, Redis,
RabbitMQ, Google Pub/Sub and AWS SQS. Delivery is at least once. The package
imports neither kopf nor the Kubernetes client, and imports a provider's SDK only
when a broker of that type is created. See docs/messaging.md.

Errors are `ductape_operator.errors` types: `BindingError` (an `InvalidConfigError`)
for a missing or malformed binding, `BrokerUnreachableError` once retrying a
lost connection gave up, `BrokerAuthError`, `ProvisioningError` for a topic or
subscription that does not exist on the broker, `BrokerError` for the rest
(including a message the broker would not take).

`enable_metrics()` (or `Broker(..., metrics=True)`) exports counters and latency
histograms with prometheus-client (docs/messaging.md, "Metrics").
"""

from ductape_operator.messaging.binding import (
    Binding,
    BindingError,
    TopicRoute,
    env_variable_names,
)
from ductape_operator.messaging.broker import Broker, Subscription
from ductape_operator.messaging.message import Message
from ductape_operator.messaging.metrics import enable as enable_metrics

__all__ = [
    "Binding",
    "BindingError",
    "Broker",
    "Message",
    "Subscription",
    "TopicRoute",
    "enable_metrics",
    "env_variable_names",
]
