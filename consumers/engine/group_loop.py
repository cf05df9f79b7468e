"""Consume → process → commit, in one loop, for any set of topics read by a consumer group.

Contract of each step:
- poll: `getmany` with a short timeout, also while every partition is paused, so the
  consumer stays in its group and sees rebalances.
- handle (the subclass): each record becomes work tracked under its offset in its
  partition's FIFO (jobs in the delivery pool, or a task), or is finished at once. Handling
  never waits for the network.
- pause: past `max_records_in_flight` every assigned partition is paused, and resumed once
  half of that has drained; a subclass may also hold single partitions (the retry tiers hold
  a partition until its head record is due). Paused, not slept: polling goes on.
- commit: per partition, one past the last contiguous finished record, at most once per
  `commit_interval_seconds`, and forced when partitions are revoked and at shutdown.

An unfinished record is never committed: a crash at any moment replays it (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final, Protocol

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import (
    CommitFailedError,
    IllegalStateError,
    KafkaError,
    MessageSizeTooLargeError,
)

from consumers.engine.clients import connection_kwargs, stop_consumer
from consumers.engine.offsets import PartitionOffsets
from service.config import Settings
from service.delivery.record import HEADER_PREFIX
from service.observability import metrics

log = structlog.get_logger("switchboard.consumer")

POLL_TIMEOUT_MS: Final = 200
# Resume fetching once the records in flight fall to this share of the cap; a gap between
# the pause and resume points keeps the partitions from flapping at the boundary.
_RESUME_FRACTION: Final = 0.5
# Produce retries to internal topics back off up to this; the broker being away stalls only
# the records concerned (their partition's commit), and loses nothing.
MAX_PRODUCE_BACKOFF: Final = 30.0


class Cancellable(Protocol):
    def cancel(self) -> Any: ...


class Partition:
    """A partition's FIFO and the unfinished work of its records, for one assignment of it."""

    __slots__ = ("offsets", "pending")

    def __init__(self) -> None:
        self.offsets = PartitionOffsets()
        # offset -> the jobs (or the task) of a record not yet finished
        self.pending: dict[int, list[Cancellable]] = {}


class PartitionLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        settings: Settings,
        *,
        producer: AIOKafkaProducer,
        topics: list[str],
        group_id: str,
        role: str,
    ) -> None:
        self._settings = settings
        self._producer = producer
        self._topics = topics
        self._group_id = group_id
        self._role = role
        self._consumer: AIOKafkaConsumer | None = None
        self._partitions: dict[TopicPartition, Partition] = {}
        self._in_flight = 0
        # Set each time a record finishes; drains wait on it instead of polling.
        self._progress = asyncio.Event()
        self._backpressure = False
        self._paused: set[TopicPartition] = set()
        self._stopping = asyncio.Event()
        self._last_commit = 0.0
        self.last_tick = time.monotonic()
        self.started = False
        metrics.RECORDS_IN_FLIGHT.labels(role).set_function(lambda: self._in_flight)

    # Hooks for subclasses

    def _handle(self, tp: TopicPartition, partition: Partition, records: list[Any]) -> None:
        raise NotImplementedError

    def _after_poll(self) -> None:
        """Called after each poll, whatever it returned."""

    def _held(self, tp: TopicPartition) -> bool:
        """Whether a partition is to stay paused whatever the backpressure."""
        return False

    def _poll_timeout_ms(self) -> int:
        return POLL_TIMEOUT_MS

    def _forget(self, tp: TopicPartition) -> None:
        """A partition was revoked: drop anything kept for it."""

    # Lifecycle

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=self._group_id,
            enable_auto_commit=False,
            auto_offset_reset=self._settings.auto_offset_reset,
            max_poll_records=self._settings.max_poll_records,
            fetch_max_wait_ms=self._settings.kafka_fetch_max_wait_ms,
            session_timeout_ms=self._settings.kafka_session_timeout_ms,
            heartbeat_interval_ms=max(300, self._settings.kafka_session_timeout_ms // 3),
        )
        await consumer.start()
        consumer.subscribe(self._topics, listener=self)
        self._consumer = consumer
        self.started = True

    @property
    def records_in_flight(self) -> int:
        return self._in_flight

    @property
    def partitions_assigned(self) -> int:
        return len(self._partitions)

    def stop(self) -> None:
        """Ask the loop to stop fetching and drain; `run` returns when it is done."""
        self._stopping.set()

    async def run(self) -> None:
        assert self._consumer is not None, "start() first"
        consumer = self._consumer
        # getmany() waits out a group join before it returns, which can take seconds; racing
        # it against the stop signal lets SIGTERM during a rebalance start the drain at once.
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.create_task(consumer.getmany(timeout_ms=self._poll_timeout_ms()))
                await asyncio.wait((fetch, stopping), return_when=asyncio.FIRST_COMPLETED)
                self.last_tick = time.monotonic()
                if not fetch.done():
                    fetch.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await fetch
                    break
                for tp, records in fetch.result().items():
                    partition = self._partitions.get(tp)
                    if partition is None:
                        continue  # revoked while the fetch was under way; the new owner reads it
                    metrics.EVENTS_CONSUMED.labels(tp.topic).inc(len(records))
                    self._handle(tp, partition, records)
                self._after_poll()
                self._sync_pauses()
                if time.monotonic() - self._last_commit >= self._settings.commit_interval_seconds:
                    await self._commit(self._partitions)
                    self._update_partition_metrics()
            await self._drain(self._settings.shutdown_grace_seconds)
        finally:
            stopping.cancel()
            await stop_consumer(consumer, self._role)
            self.started = False

    # Tracking work

    def _track_jobs(self, partition: Partition, offset: int, jobs: list[Cancellable]) -> None:
        partition.pending[offset] = jobs
        self._in_flight += 1

    def _track_task(self, tp: TopicPartition, partition: Partition, offset: int, work: Any) -> None:
        task: asyncio.Task[Any] = asyncio.create_task(work)
        self._track_jobs(partition, offset, [task])

        def done(t: asyncio.Task[Any]) -> None:
            # A cancelled task was abandoned on revoke or shutdown: it stays uncommitted and
            # is read again by whoever owns the partition next.
            if t.cancelled():
                return
            if (exc := t.exception()) is not None:
                log.error("record_failed", topic=tp.topic, partition=tp.partition,
                          offset=offset, error=repr(exc))  # fmt: skip
                return
            self._record_done(partition, offset)

        task.add_done_callback(done)

    def _record_done(self, partition: Partition, offset: int) -> None:
        if partition.pending.pop(offset, None) is None:
            return  # abandoned on revoke while its last job was finishing
        self._in_flight -= 1
        partition.offsets.finish(offset)
        self._progress.set()

    async def _quarantine(
        self, tp: TopicPartition, record: ConsumerRecord, reason: str, detail: str
    ) -> None:
        """Copy an unreadable record to the invalid topic, with why and where it came from."""
        ours = [
            (HEADER_PREFIX + "reason", reason.encode()),
            (HEADER_PREFIX + "error", detail.encode()[:1024]),
            (HEADER_PREFIX + "origin.topic", tp.topic.encode()),
            (HEADER_PREFIX + "origin.partition", str(tp.partition).encode()),
            (HEADER_PREFIX + "origin.offset", str(record.offset).encode()),
            (HEADER_PREFIX + "origin.timestamp", str(record.timestamp).encode()),
        ]
        theirs = [(k, v) for k, v in record.headers if not k.startswith(HEADER_PREFIX)]
        headers = [*theirs, *ours]
        value = record.value
        while True:
            try:
                await produce(
                    self._producer, self._settings.invalid_topic, "quarantine",
                    value=value, key=record.key, headers=headers,
                )  # fmt: skip
            except MessageSizeTooLargeError:
                # Too large for the broker even to quarantine: keep the record's coordinates
                # (so it can be found in its origin topic) without its value, then without
                # the producer's own headers.
                if value is None and len(headers) == len(ours):
                    log.exception("quarantine_impossible", topic=tp.topic, partition=tp.partition,
                                  offset=record.offset)  # fmt: skip
                    return
                value = None
                headers = [*ours, (HEADER_PREFIX + "value_dropped", b"too large")]
                continue
            return

    # Pausing

    def _sync_pauses(self) -> None:
        assert self._consumer is not None
        cap = self._settings.max_records_in_flight
        if not self._backpressure and self._in_flight >= cap:
            self._backpressure = True
            log.info("consumer_paused", consumer=self._role, records_in_flight=self._in_flight)
        elif self._backpressure and self._in_flight <= cap * _RESUME_FRACTION:
            self._backpressure = False
            log.info("consumer_resumed", consumer=self._role, records_in_flight=self._in_flight)
        wanted = (
            set(self._partitions)
            if self._backpressure
            else {tp for tp in self._partitions if self._held(tp)}
        )
        if to_pause := wanted - self._paused:
            self._consumer.pause(*to_pause)
        if to_resume := self._paused - wanted:
            self._consumer.resume(*to_resume)
        self._paused = wanted
        metrics.PARTITIONS_PAUSED.labels(self._role).set(len(wanted))

    # Commit

    async def _commit(self, partitions: dict[TopicPartition, Partition]) -> None:
        assert self._consumer is not None
        self._last_commit = time.monotonic()
        offsets = {
            tp: offset
            for tp, p in partitions.items()
            if (offset := p.offsets.to_commit()) is not None
        }
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError) as exc:
            # Not fatal: the offsets stay uncommitted and are tried again at the next
            # interval or on revoke; at worst their records are delivered again.
            metrics.COMMITS.labels("failed").inc()
            log.warning("commit_failed", consumer=self._role, error=repr(exc))
            return
        metrics.COMMITS.labels("ok").inc()
        for tp, offset in offsets.items():
            partitions[tp].offsets.last_committed = offset

    # Rebalance (called by aiokafka between polls)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("revoked").inc()
        leaving = {tp: self._partitions[tp] for tp in revoked if tp in self._partitions}
        await self._finish(leaving, self._settings.rebalance_grace_seconds)
        for tp in leaving:
            del self._partitions[tp]
            self._paused.discard(tp)
            self._forget(tp)
            # A partition that moved away leaves no stale series behind.
            for gauge in (metrics.OLDEST_INCOMPLETE_AGE, metrics.CONSUMER_LAG):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        metrics.PARTITIONS_ASSIGNED.labels(self._role).set(len(self._partitions))
        log.info("partitions_revoked", consumer=self._role, partitions=[str(tp) for tp in revoked])

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("assigned").inc()
        for tp in assigned:
            self._partitions.setdefault(tp, Partition())
        if self._backpressure and self._consumer is not None:
            self._consumer.pause(*assigned)
            self._paused.update(assigned)
        metrics.PARTITIONS_ASSIGNED.labels(self._role).set(len(self._partitions))
        log.info("partitions_assigned", consumer=self._role,
                 partitions=[str(tp) for tp in assigned])  # fmt: skip

    # Drain

    async def _drain(self, grace: float) -> None:
        log.info("draining", consumer=self._role, records_in_flight=self._in_flight,
                 grace_seconds=grace)  # fmt: skip
        await self._finish(self._partitions, grace)

    async def _finish(self, partitions: dict[TopicPartition, Partition], grace: float) -> None:
        """Give the partitions' records `grace` seconds, commit what finished, cancel the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(p.pending for p in partitions.values()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        await self._commit(partitions)
        tasks = []
        for p in partitions.values():
            for work in p.pending.values():
                for item in work:
                    item.cancel()
                    if isinstance(item, asyncio.Task):
                        tasks.append(item)
            self._in_flight -= len(p.pending)
            p.pending.clear()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # Metrics

    def _update_partition_metrics(self) -> None:
        assert self._consumer is not None
        now_ms = time.time() * 1000
        for tp, p in self._partitions.items():
            labels = (tp.topic, str(tp.partition))
            oldest = p.offsets.oldest_pending_timestamp_ms()
            metrics.OLDEST_INCOMPLETE_AGE.labels(*labels).set(
                0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)
            )
            highwater = self._consumer.highwater(tp)
            done = p.offsets.last_committed
            if highwater is not None and done is not None:
                metrics.CONSUMER_LAG.labels(*labels).set(max(0, highwater - done))


async def until_acknowledged(write: Callable[[], Awaitable[Any]], role: str) -> None:
    """Run a Kafka write until the broker acknowledges it; a broker error is retried.

    MessageSizeTooLargeError is the caller's: retrying cannot make a record smaller.
    Cancelling (revoke, shutdown) stops the retries; the caller's record stays uncommitted.
    """
    backoff = 0.5
    while True:
        try:
            await write()
        except MessageSizeTooLargeError:
            raise
        except KafkaError as err:
            metrics.KAFKA_PRODUCE_ERRORS.labels(role).inc()
            log.warning("produce_failed", role=role, error=repr(err), retry_in=backoff)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, MAX_PRODUCE_BACKOFF)
            continue
        return


async def produce(
    producer: AIOKafkaProducer,
    topic: str,
    role: str,
    *,
    value: bytes | None,
    key: bytes | None = None,
    headers: list[tuple[str, bytes]] | None = None,
) -> None:
    """Produce one record until acknowledged (see `until_acknowledged`)."""
    await until_acknowledged(
        lambda: producer.send_and_wait(topic, value=value, key=key, headers=headers), role
    )
