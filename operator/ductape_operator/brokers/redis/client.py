"""Redis transport: a topic is a stream, a subscription a consumer group on it.

A message is one stream entry: the payload in field `data`, each application
header in a field `h:<name>`, the content type in the reserved
`ductape-content-type` field (see `message`). The message id is the stream
entry id (the same in every consumer group), unless the application chose one
with `publish(message_id=...)`, which travels in a `ductape-id` field. Publishing uses XADD with
NOMKSTREAM, so a topic that was never provisioned raises instead of creating a
stream no group reads. Consumers read new entries with XREADGROUP; an entry left
pending longer than the redelivery timeout (its consumer crashed or never
settled it) is taken over with XAUTOCLAIM by whichever consumer of the group
looks next. A nack with requeue makes the entry claimable at once; acks go out
as batched XACKs.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
import uuid
import weakref
from collections.abc import Sequence
from typing import Any

import redis.asyncio as aioredis
import redis.backoff as redis_backoff
import redis.exceptions as redis_errors
from redis.asyncio.retry import Retry

from ductape_operator import errors
from ductape_operator import tls as tls_
from ductape_operator.brokers.redis.entries import Entries
from ductape_operator.brokers.redis.errors import classify
from ductape_operator.messaging import _transport
from ductape_operator.messaging import binding as binding_
from ductape_operator.messaging import message as message_

DATA_FIELD = b"data"
KEY_FIELD = b"ductape-key"
HEADER_PREFIX = b"h:"
_HEADER_PREFIX_LEN = len(HEADER_PREFIX)
_ID_FIELD = message_.ID_HEADER.encode()
_CONTENT_TYPE_FIELD = message_.CONTENT_TYPE_HEADER.encode()
#: Seconds one connection attempt may take (retries go on up to `retry_timeout`).
CONNECT_TIMEOUT = 10.0


def map_error(exc: BaseException) -> errors.DuctapeError | None:
    """The client side's error for a redis-py exception (None: not one): `errors.classify`,
    shared with the operator side."""
    text = f"redis: {type(exc).__name__}: {exc}"
    return _transport.error_for(classify(exc), text, missing="the subscription")


def make_transport(binding: binding_.Binding, options: _transport.Options) -> RedisTransport:
    return RedisTransport(binding, options)


def _connection_kwargs(binding: binding_.Binding) -> dict[str, Any]:
    entries = Entries.read(binding)
    return {
        "host": entries.host,
        "port": entries.port,
        "db": entries.database,
        "username": entries.username,
        "password": entries.password,
        "ssl": entries.tls,
        # redis-py builds its context from the CA text (and the pair's files, below).
        "ssl_ca_data": binding.get(tls_.CA_ENTRY) if entries.tls else None,
    }


class RedisTransport:
    """One redis-py client (a connection pool) for publishing and every consumer.

    A connection the server closed (a restart, `CLIENT KILL`, a network cut) fails
    the command that used it; `retrying` runs it again on a fresh pooled connection
    for up to `retry_timeout`. redis-py's own retries are off so the two never
    stack (docs/messaging.md, "Through a broker restart").
    """

    def __init__(self, binding: binding_.Binding, options: _transport.Options) -> None:
        self._kwargs = _connection_kwargs(binding)
        cert, key = binding.get(tls_.CERT_ENTRY), binding.get(tls_.KEY_ENTRY)
        if self._kwargs["ssl"] and cert and key:
            binding.tls_context()  # a broken pair fails here, named by the binding
            pair = tls_.PairFiles(cert, key)
            weakref.finalize(self, pair.cleanup)
            self._kwargs.update(ssl_certfile=pair.cert_path, ssl_keyfile=pair.key_path)
        self._options = options
        self._client: aioredis.Redis | None = None
        self.link = _transport.Link(f"redis {self._kwargs['host']}:{self._kwargs['port']}")
        self.retrying = _transport.Retrier("redis", options, map_error)

    @property
    def client(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("broker is not started")
        return self._client

    async def start(self) -> None:
        if self._client is not None:
            return
        client = aioredis.Redis(
            **self._kwargs,
            decode_responses=False,
            retry=Retry(redis_backoff.NoBackoff(), 0),
            socket_connect_timeout=CONNECT_TIMEOUT,
        )

        async def ping() -> None:
            await client.ping()

        try:
            await self.retrying(ping, "connect", self.link)
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    async def publish(
        self, route: binding_.TopicRoute, messages: Sequence[message_.OutgoingMessage]
    ) -> None:
        stream = route.name
        assert stream is not None  # only SQS topics lack a name

        async def send() -> None:
            async with self.client.pipeline(transaction=False) as pipe:
                for m in messages:
                    # The fields `OutgoingMessage.wire_headers` names, built directly:
                    # this runs for every message.
                    fields: dict[Any, Any] = {DATA_FIELD: m.data}
                    for name, value in m.headers.items():
                        fields[HEADER_PREFIX + name.encode()] = value
                    if m.explicit_id:  # else the stream entry id is the message id
                        fields[message_.ID_HEADER] = m.id
                    if m.content_type != message_.OCTET_STREAM:
                        fields[message_.CONTENT_TYPE_HEADER] = m.content_type
                    if m.key is not None:
                        fields[KEY_FIELD] = m.key
                    pipe.xadd(stream, fields, nomkstream=True)
                results = await pipe.execute(raise_on_error=True)
            if any(r is None for r in results):
                raise errors.ProvisioningError(
                    f"redis: stream {stream!r} does not exist (is topic {route.tag!r} provisioned?)"
                )
            for m, entry_id in zip(messages, results, strict=True):
                if not m.explicit_id:
                    m.id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)

        await self.retrying(send, "publish", self.link)

    def consumer(
        self,
        route: binding_.TopicRoute,
        subscription: str,
        physical: str,
        options: _transport.Options,
    ) -> RedisConsumer:
        assert route.name is not None
        return RedisConsumer(self, route, subscription, physical, options)


class RedisConsumer:
    client_redelivery = False

    def __init__(
        self,
        transport: RedisTransport,
        route: binding_.TopicRoute,
        subscription: str,
        group: str,
        options: _transport.Options,
    ) -> None:
        assert route.name is not None
        self._transport = transport
        self._stream = route.name
        self._tag = route.tag
        self._subscription = subscription
        self._group = group
        self._options = options
        self._name = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._idle_ms = max(1, int(options.redelivery_timeout * 1000))
        self._claim_every = min(1.0, max(0.05, options.redelivery_timeout / 4))
        self._claim_at = 0.0
        self._claim_cursor: Any = "0-0"
        self._acks: _transport.Batcher[bytes] = _transport.Batcher(self._xack, "redis XACK")
        self.link = _transport.Link(f"redis subscription {route.tag}/{subscription}")

    async def start(self) -> None:
        async def check() -> None:
            groups = await self._transport.client.xinfo_groups(self._stream)
            names = {g["name"] for g in groups}
            if self._group.encode() not in names and self._group not in names:
                raise errors.ProvisioningError(
                    f"redis: stream {self._stream!r} has no consumer group {self._group!r} "
                    f"(is subscription {self._subscription!r} provisioned?)"
                )

        await self._transport.retrying(check, "subscribe", self.link)

    async def fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        return await self._transport.retrying(
            lambda: self._fetch(max_messages, timeout), "fetch", self.link, wait=timeout
        )

    async def _fetch(self, max_messages: int, timeout: float) -> list[message_.Message]:
        client = self._transport.client
        if time.monotonic() >= self._claim_at:
            claim: Any = await client.xautoclaim(
                self._stream,
                self._group,
                self._name,
                min_idle_time=self._idle_ms,
                start_id=self._claim_cursor,
                count=max_messages,
            )
            cursor, entries = claim[0], claim[1]
            done = cursor in (b"0-0", "0-0")
            self._claim_cursor = "0-0" if done else cursor
            self._claim_at = time.monotonic() + (self._claim_every if done else 0.0)
            entries = [(i, f) for i, f in entries if f]
            if entries:
                counts = await self._delivery_counts(client, [i for i, _ in entries])
                return [self._message(i, f, count=counts.get(i)) for i, f in entries]
        block = max(1, int(min(timeout, self._claim_every) * 1000))
        response: Any = await client.xreadgroup(
            self._group, self._name, {self._stream: ">"}, count=max_messages, block=block
        )
        out: list[message_.Message] = []
        now = time.monotonic()
        make = self._message
        for _stream, entries in response or []:
            out.extend([make(i, f, count=1, now=now) for i, f in entries if f])
        return out

    async def _delivery_counts(self, client: aioredis.Redis, ids: list[Any]) -> dict[Any, int]:
        """Deliveries of entries just claimed, from the group's pending-entries list
        (XAUTOCLAIM counted the claim): what dead letters go by (docs/messaging.md)."""
        pending: Any = await client.xpending_range(
            self._stream,
            self._group,
            min=min(ids, key=_entry_order),
            max=max(ids, key=_entry_order),
            # Room for this consumer's other pending entries in that range.
            count=2 * len(ids) + 100,
            consumername=self._name,
        )
        wanted = set(ids)
        return {
            p["message_id"]: int(p["times_delivered"]) for p in pending if p["message_id"] in wanted
        }

    def _message(
        self,
        entry_id: bytes,
        fields: dict[bytes, bytes],
        *,
        count: int | None,
        now: float | None = None,
    ) -> message_.Message:
        # One pass over the fields (this runs for every message): the payload, the
        # application's headers, the reserved ones picked out.
        headers: dict[str, str] = {}
        data = b""
        message_id = content_type = key = None
        for name, value in fields.items():
            if name == DATA_FIELD:
                data = value
            elif name.startswith(HEADER_PREFIX):
                headers[name[_HEADER_PREFIX_LEN:].decode()] = value.decode()
            elif name == _ID_FIELD:
                message_id = value.decode()
            elif name == _CONTENT_TYPE_FIELD:
                content_type = value.decode()
            elif name == KEY_FIELD:
                key = value.decode()
        # Positional: a call by keywords costs twice as much.
        return message_.Message(
            data,
            headers,
            message_id or entry_id.decode(),
            content_type or message_.OCTET_STREAM,
            self._tag,
            self._subscription,
            self,
            entry_id,
            key,
            count,
            now,
        )

    async def ack_many(self, messages: list[message_.Message]) -> None:
        self._acks.extend([m.token for m in messages])

    async def settle(self, message: message_.Message, *, ack: bool, requeue: bool) -> None:
        if ack or not requeue:
            self._acks.add(message.token)
            return

        async def release() -> None:
            # Claim it with an idle time past the timeout: the next XAUTOCLAIM of
            # any consumer of the group takes it.
            await self._transport.client.xclaim(
                self._stream,
                self._group,
                self._name,
                min_idle_time=0,
                message_ids=[message.token],
                idle=self._idle_ms + 1000,
                justid=True,
            )
            self._claim_at = 0.0

        await self._transport.retrying(release, "nack", self.link)

    async def _xack(self, ids: list[bytes]) -> None:
        # Retried like the rest, so a reconnect does not turn acks into redeliveries.
        async def xack() -> None:
            await self._transport.client.xack(self._stream, self._group, *ids)

        await self._transport.retrying(xack, "ack", self.link)

    async def aclose(self) -> None:
        await self._acks.flush()
        # Forget this consumer's name unless it still owns pending entries: deleting
        # it then would make them unclaimable.
        client = self._transport.client
        with contextlib.suppress(redis_errors.RedisError, OSError):
            pending = await client.xpending_range(
                self._stream, self._group, min="-", max="+", count=1, consumername=self._name
            )
            if not pending:
                await client.xgroup_delconsumer(self._stream, self._group, self._name)


def _entry_order(entry_id: Any) -> tuple[int, int]:
    """A stream entry id (`<ms>-<seq>`) as numbers, for ordering."""
    text = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)
