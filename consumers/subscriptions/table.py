"""The subscriptions table: a compacted Kafka topic materialized in every replica's memory.

It holds three kinds of record, told apart by key: subscriptions (`sub_…`), API keys
(`key_…`) and endpoint health (`health_<subscription id>`: since when the endpoint has been
failing). Health is a record of its own so that the service noting a failing endpoint never
overwrites a customer's concurrent edit of the subscription.

A write returns only after this replica's reader has read it back (read-your-writes), so a
client that creates a subscription and then reads it from the same replica sees it, and an
event consumed after the write is routed by it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from consumers.engine.reader import TopicReader
from service.config import Settings
from service.observability import metrics
from service.subscriptions.api_keys import RECORD_PREFIX, ApiKey
from service.subscriptions.model import Health, Subscription
from service.subscriptions.secretbox import SecretBox, SecretsUnavailable

log = structlog.get_logger("switchboard.subscriptions")

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Subscription)
_KEY_DECODER = msgspec.json.Decoder(ApiKey)
HEALTH_PREFIX: Final = "health_"


_HEALTH_DECODER = msgspec.json.Decoder(Health)

Listener = Callable[[str, Subscription | None], None]


class SubscriptionTable(TopicReader):
    def __init__(
        self, settings: Settings, producer: Producer, box: SecretBox | None = None
    ) -> None:
        super().__init__(settings, settings.subscriptions_topic)
        self._box = box or SecretBox()
        self._keys: dict[str, ApiKey] = {}
        self._key_by_hash: dict[str, ApiKey] = {}
        self._health: dict[str, Health] = {}
        self._producer = producer
        self._subs: dict[str, Subscription] = {}
        self._listeners: list[Listener] = []

    def add_listener(self, listener: Listener) -> None:
        """Called with (id, subscription or None when deleted) for every change read."""
        self._listeners.append(listener)

    # Reads

    def get(self, sub_id: str) -> Subscription | None:
        return self._subs.get(sub_id)

    def all(self) -> list[Subscription]:
        return list(self._subs.values())

    def api_key_by_hash(self, key_hash: str) -> ApiKey | None:
        return self._key_by_hash.get(key_hash)

    def api_keys(self) -> list[ApiKey]:
        return list(self._keys.values())

    def health(self, sub_id: str) -> Health | None:
        return self._health.get(sub_id)

    # Writes (read-your-writes)

    async def put(self, record: Subscription | ApiKey) -> None:
        """Write a subscription (its secrets sealed when a key is configured) or an API key."""
        stored = self._box.seal(record) if isinstance(record, Subscription) else record
        await self._write(record.id, _ENCODER.encode(stored))

    async def reseal_all(self) -> int:
        """Write every subscription again, sealed with the first key: the end of a key rotation."""
        subs = self.all()
        for sub in subs:
            await self.put(sub)
        return len(subs)

    async def delete(self, record_id: str) -> None:
        """Delete a subscription or an API key."""
        await self._write(record_id, None)

    async def put_health(self, sub_id: str, health: Health | None) -> None:
        """Record that an endpoint is failing, or (None) that it is not any more."""
        value = None if health is None else _ENCODER.encode(health)
        await self._write(HEALTH_PREFIX + sub_id, value)

    async def _write(self, key: str, value: bytes | None) -> None:
        """Produce until acknowledged, then wait until this replica has read it back."""
        md = await produce(
            self._producer, self._topic, "table", key=key.encode(), value=value, retry_fatal=False
        )
        await self.wait_for(TopicPartition(md.topic, md.partition), md.offset)

    def _apply(self, record: ConsumerRecord) -> None:
        key, value, offset = record.key, record.value, record.offset
        if not key:
            metrics.SUBSCRIPTION_RECORDS_INVALID.inc()
            log.warning("subscription_record_skipped", offset=offset, reason="no key")
            return
        sub_id = key.decode("utf-8", "replace")
        if sub_id.startswith(RECORD_PREFIX):
            self._apply_key(sub_id, value, offset)
            return
        if sub_id.startswith(HEALTH_PREFIX):
            self._apply_health(sub_id.removeprefix(HEALTH_PREFIX), value, offset)
            return
        if value is None:
            if self._subs.pop(sub_id, None) is not None:
                self._notify(sub_id, None)
            return
        try:
            sub = self._box.open(_DECODER.decode(value))
        except (msgspec.DecodeError, SecretsUnavailable) as exc:
            # Skipped, not fatal: one bad record must not keep every replica from starting.
            metrics.SUBSCRIPTION_RECORDS_INVALID.inc()
            log.warning("subscription_record_skipped", offset=offset, reason=str(exc))
            return
        if sub.id != sub_id:
            metrics.SUBSCRIPTION_RECORDS_INVALID.inc()
            log.warning("subscription_record_skipped", offset=offset, reason="key is not the id")
            return
        self._subs[sub_id] = sub
        self._notify(sub_id, sub)

    def _apply_key(self, key_id: str, value: bytes | None, offset: int) -> None:
        previous = self._keys.pop(key_id, None)
        if previous is not None:
            self._key_by_hash.pop(previous.key_hash, None)
        if value is None:
            return
        try:
            record = _KEY_DECODER.decode(value)
        except msgspec.DecodeError as exc:
            metrics.SUBSCRIPTION_RECORDS_INVALID.inc()
            log.warning("api_key_record_skipped", offset=offset, reason=str(exc))
            return
        self._keys[key_id] = record
        self._key_by_hash[record.key_hash] = record

    def _apply_health(self, sub_id: str, value: bytes | None, offset: int) -> None:
        if value is None:
            self._health.pop(sub_id, None)
            return
        try:
            self._health[sub_id] = _HEALTH_DECODER.decode(value)
        except msgspec.DecodeError as exc:
            metrics.SUBSCRIPTION_RECORDS_INVALID.inc()
            log.warning("health_record_skipped", offset=offset, reason=str(exc))

    def _notify(self, sub_id: str, sub: Subscription | None) -> None:
        for listener in self._listeners:
            listener(sub_id, sub)

    def _on_loaded(self) -> None:
        self._update_gauge()
        log.info("subscriptions_loaded", count=len(self._subs))

    def _after_batch(self) -> None:
        self._update_gauge()

    def _update_gauge(self) -> None:
        enabled = sum(1 for s in self._subs.values() if s.enabled)
        metrics.SUBSCRIPTIONS.labels("enabled").set(enabled)
        metrics.SUBSCRIPTIONS.labels("disabled").set(len(self._subs) - enabled)
