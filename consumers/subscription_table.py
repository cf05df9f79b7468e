"""The subscriptions table: a compacted Kafka topic materialized in every replica's memory.

The reader assigns itself every partition of the topic (no consumer group: each replica needs
the whole table), reads it from the beginning, and follows it. `loaded` is set once it has
read up to the end offsets seen at start. A write returns only after this replica's reader has
read it back (read-your-writes), so a client that creates a subscription and then reads it
from the same replica sees it, and an event consumed after the write is routed by it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

import msgspec
import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.errors import KafkaError

from consumers.kafka import connection_kwargs
from service import metrics
from service.apikeys import RECORD_PREFIX, ApiKey
from service.config import Settings
from service.secretbox import SecretBox, SecretsUnavailable
from service.subscriptions import Subscription

log = structlog.get_logger("switchboard.subscriptions")

_ENCODER = msgspec.json.Encoder()
_DECODER = msgspec.json.Decoder(Subscription)
_KEY_DECODER = msgspec.json.Decoder(ApiKey)

Listener = Callable[[str, Subscription | None], None]


class SubscriptionTable:
    def __init__(
        self, settings: Settings, producer: AIOKafkaProducer, box: SecretBox | None = None
    ) -> None:
        self._settings = settings
        self._box = box or SecretBox()
        self._keys: dict[str, ApiKey] = {}
        self._key_by_hash: dict[str, ApiKey] = {}
        self._topic = settings.subscriptions_topic
        self._producer = producer
        self._consumer: AIOKafkaConsumer | None = None
        self._subs: dict[str, Subscription] = {}
        self._listeners: list[Listener] = []
        self._end_at_start: dict[TopicPartition, int] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._progress = asyncio.Condition()
        self.loaded = asyncio.Event()

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

    # Writes (read-your-writes)

    async def put(self, record: Subscription | ApiKey) -> None:
        """Write a subscription (its secrets sealed when a key is configured) or an API key."""
        stored = self._box.seal(record) if isinstance(record, Subscription) else record
        md = await self._producer.send_and_wait(
            self._topic, key=record.id.encode(), value=_ENCODER.encode(stored)
        )
        await self._wait_for(TopicPartition(md.topic, md.partition), md.offset)

    async def reseal_all(self) -> int:
        """Write every subscription again, sealed with the first key: the end of a key rotation."""
        subs = self.all()
        for sub in subs:
            await self.put(sub)
        return len(subs)

    async def delete(self, sub_id: str) -> None:
        md = await self._producer.send_and_wait(self._topic, key=sub_id.encode(), value=None)
        await self._wait_for(TopicPartition(md.topic, md.partition), md.offset)

    async def _wait_for(self, tp: TopicPartition, offset: int) -> None:
        async with self._progress:
            await self._progress.wait_for(lambda: self._positions.get(tp, 0) > offset)

    # The reader

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer
        partitions = consumer.partitions_for_topic(self._topic)
        if not partitions:
            raise RuntimeError(f"subscriptions topic {self._topic} does not exist")
        tps = [TopicPartition(self._topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        self._end_at_start = await consumer.end_offsets(tps)
        self._check_loaded()

    async def stop(self) -> None:
        if self._consumer is not None:
            await self._consumer.stop()

    async def run(self) -> None:
        assert self._consumer is not None, "start() first"
        while True:
            try:
                batch = await self._consumer.getmany(timeout_ms=500)
            except KafkaError:
                log.exception("subscriptions_read_failed")
                await asyncio.sleep(1)  # the broker is away; the next fetch reconnects
                continue
            for tp, records in batch.items():
                for record in records:
                    self._apply(record.key, record.value, record.offset)
                self._positions[tp] = records[-1].offset + 1
            for tp in self._consumer.assignment():
                with contextlib.suppress(KafkaError):
                    self._positions[tp] = max(
                        self._positions.get(tp, 0), await self._consumer.position(tp)
                    )
            if batch:
                self._update_gauge()
            self._check_loaded()
            async with self._progress:
                self._progress.notify_all()

    def _apply(self, key: bytes | None, value: bytes | None, offset: int) -> None:
        if not key:
            metrics.SUBSCRIPTION_RECORDS_INVALID.inc()
            log.warning("subscription_record_skipped", offset=offset, reason="no key")
            return
        sub_id = key.decode("utf-8", "replace")
        if sub_id.startswith(RECORD_PREFIX):
            self._apply_key(sub_id, value, offset)
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

    def _notify(self, sub_id: str, sub: Subscription | None) -> None:
        for listener in self._listeners:
            listener(sub_id, sub)

    def _check_loaded(self) -> None:
        if not self.loaded.is_set() and all(
            self._positions.get(tp, 0) >= end for tp, end in self._end_at_start.items()
        ):
            self.loaded.set()
            self._update_gauge()
            log.info("subscriptions_loaded", count=len(self._subs))

    def _update_gauge(self) -> None:
        enabled = sum(1 for s in self._subs.values() if s.enabled)
        metrics.SUBSCRIPTIONS.labels("enabled").set(enabled)
        metrics.SUBSCRIPTIONS.labels("disabled").set(len(self._subs) - enabled)
