"""The lookup topics read without a consumer group: a partition is answered by the live
member that owns it (ownership.py), from where its last owner reported it had answered.

`OwnedPartitions` has the shape of a group consumer (`GroupConsumer`), so that the group
loop drives it as any other: tokens, the in-flight cap, the drain at shutdown. What a group
coordinator does is done here instead, between two fetches: the live members are read from
the members topic (roster.py), and a change of the partitions this member owns is handed to
the loop's rebalance listener. There is no join to wait for: a member that joins or leaves
moves only the partitions it wins or loses, and every other partition is read on.

A "commit" is not sent to the broker: it is the answered-through position of the partition,
which the next heartbeat reports (heartbeats.py). A partition taken over is read again from
the last reported position, so the requests its last owner answered since its last report
are answered twice (the caller takes the first reply by correlation id); none is skipped.
A partition of which no position was ever reported starts at the requests made one deadline
ago: an older one could only be answered `expired`, to a caller that has long hung up.

Every partition of the lookup topics is assigned to this consumer, and those it does not own
are paused: not fetched at all, and taken over by a seek and a resume.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumers.engine.clients import connection_kwargs, fetch_kwargs, stop_consumer
from consumers.engine.contract import Producer
from consumers.lookups.heartbeats import Heartbeats
from consumers.lookups.ownership import owned_by
from consumers.lookups.positions import AnsweredThrough
from consumers.lookups.roster import Roster
from service.config import Settings
from service.observability import metrics

log = structlog.get_logger("switchboard.lookups")

# The lookup topics are the platform's, and may be created after the service starts: their
# partitions are looked for this often until every one of them is found.
_DISCOVERY_SECONDS: Final = 2.0


class OwnedPartitions:
    def __init__(
        self,
        settings: Settings,
        producer: Producer,
        *,
        member: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._settings = settings
        # Random per process: a restarted replica is a new member, and its old id times out
        # or was tombstoned when it left.
        self.member = member or uuid.uuid4().hex
        self._clock = clock
        self._roster = Roster(settings, clock)
        self._answered = AnsweredThrough()
        self._heartbeats = Heartbeats(
            producer, settings, member=self.member, roster=self._roster,
            answered=self._answered, clock=clock,
        )  # fmt: skip
        self._consumer: AIOKafkaConsumer | None = None
        self._listener: Any = None
        self._topics: list[str] = []
        self._partitions: list[TopicPartition] = []
        self._next_discovery = 0.0
        self._owned: set[TopicPartition] = set()
        # Paused by the loop (backpressure), as opposed to paused for not being owned.
        self._held: set[TopicPartition] = set()
        self._announced = False
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        consumer = AIOKafkaConsumer(
            **connection_kwargs(self._settings),
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="latest",
            max_poll_records=self._settings.max_poll_records,
            **fetch_kwargs(self._settings),
        )
        await consumer.start()
        self._consumer = consumer
        await self._roster.start()
        self._tasks = [
            asyncio.create_task(self._roster.run(), name="lookup members"),
            asyncio.create_task(self._heartbeats.run(), name="lookup heartbeats"),
        ]

    def subscribe(self, topics: list[str], listener: Any) -> None:
        self._topics = list(topics)
        self._listener = listener

    async def getmany(
        self, *partitions: TopicPartition, timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        self._check_tasks()
        if not self._partitions:
            await self._discover(consumer)
        await self._follow_ownership(consumer)
        # Named ones only, as the loop asks (engine/group_loop.py): a partition getmany
        # looks at while it is paused loses what was prefetched of it.
        fetching = [tp for tp in partitions if tp in self._owned] if partitions else self._owned
        if not fetching:
            # Nothing to fetch; sleeping keeps the loop's pace (and its liveness tick).
            await asyncio.sleep(timeout_ms / 1000)
            return {}
        batch: dict[TopicPartition, list[ConsumerRecord]] = await consumer.getmany(
            *fetching, timeout_ms=timeout_ms
        )
        # A partition released above is paused, and aiokafka returns nothing of a paused
        # partition; its new owner reads it from the last reported position anyway.
        return {tp: records for tp, records in batch.items() if tp in self._owned}

    def _check_tasks(self) -> None:
        """The members' reader and the heartbeats run for the life of the consumer; one that
        ended would leave this member answering from a stale view: the loop fails instead."""
        for task in self._tasks:
            if task.done():
                error = None if task.cancelled() else task.exception()
                raise RuntimeError(f"{task.get_name()} stopped: {error!r}")

    async def _discover(self, consumer: AIOKafkaConsumer) -> None:
        now = self._clock()
        if now < self._next_discovery:
            return
        self._next_discovery = now + _DISCOVERY_SECONDS
        # A fresh metadata request: the client's own cache knows only the topics that
        # existed when it started. (`topics()` makes the same request but keeps only names.)
        try:
            cluster = await consumer._client.fetch_all_metadata()
        except KafkaError as exc:
            log.warning("lookup_topics_unknown", error=repr(exc), retry_in=_DISCOVERY_SECONDS)
            return
        found = {t: cluster.partitions_for_topic(t) for t in self._topics}
        missing = sorted(t for t, parts in found.items() if not parts)
        if missing:
            log.warning("lookup_topics_missing", topics=missing, retry_in=_DISCOVERY_SECONDS)
            return
        self._partitions = sorted(TopicPartition(t, p) for t, parts in found.items()
                                  for p in parts)  # fmt: skip
        consumer.assign(self._partitions)
        consumer.pause(*self._partitions)
        log.info("lookup_partitions_found", partitions=len(self._partitions))

    async def _follow_ownership(self, consumer: AIOKafkaConsumer) -> None:
        """Hand the loop the partitions this member has lost and won since the last call."""
        now = self._clock()
        membership = self._roster.membership
        live = membership.live(now)
        metrics.LOOKUP_MEMBERS.set(len(live))
        # Not a member (yet, or any more: its own heartbeats are not read back): it owns
        # nothing, and every other member's view agrees.
        ready = self._heartbeats.beating.is_set() and self.member in live
        wanted = self._owned_in(membership.readers(now)) if ready else set()
        if lost := sorted(self._owned - wanted):
            self._owned.difference_update(lost)
            self._held.difference_update(lost)
            for tp in lost:
                self._answered.release(tp)
            consumer.pause(*lost)
            log.info("lookup_partitions_released", partitions=[str(tp) for tp in lost],
                     members=len(live))  # fmt: skip
            await self._listener.on_partitions_revoked(lost)
        gained = []
        for tp in sorted(wanted - self._owned):
            try:
                start, source = await self._start_of(consumer, tp)
            except KafkaError as exc:
                # Taken at a later call: meanwhile its requests wait, and none is skipped.
                log.warning("lookup_partition_not_taken", partition=str(tp), error=repr(exc))
                continue
            gained.append(tp)
            consumer.seek(tp, start)
            self._answered.take(tp, start)
            log.info("lookup_partition_taken", partition=str(tp), offset=start, source=source,
                     members=len(live))  # fmt: skip
        if gained:
            self._owned.update(gained)
            consumer.resume(*(tp for tp in gained if tp not in self._held))
        if gained or (ready and not self._announced):
            self._announced = True  # the loop's `joined`: ready, even owning nothing
            await self._listener.on_partitions_assigned(gained)

    def _owned_in(self, readers: dict[str, frozenset[str]]) -> set[TopicPartition]:
        wanted: set[TopicPartition] = set()
        for topic in self._topics:
            tps = [tp for tp in self._partitions if tp.topic == topic]
            wanted |= owned_by(self.member, readers.get(topic, frozenset()), tps)
        return wanted

    async def _start_of(self, consumer: AIOKafkaConsumer, tp: TopicPartition) -> tuple[int, str]:
        """Where a partition taken over is read from, and why."""
        reported = self._roster.membership.position(tp)
        if reported is not None:
            return reported, "reported"
        since_ms = int((time.time() - self._settings.lookup_deadline_seconds) * 1000)
        found = (await consumer.offsets_for_times({tp: since_ms}))[tp]
        if found is not None:
            return found.offset, "deadline"
        return (await consumer.end_offsets([tp]))[tp], "end"

    def pause(self, *partitions: TopicPartition) -> None:
        assert self._consumer is not None
        self._held.update(partitions)
        self._consumer.pause(*partitions)

    def resume(self, *partitions: TopicPartition) -> None:
        assert self._consumer is not None
        self._held.difference_update(partitions)
        self._consumer.resume(*(tp for tp in partitions if tp in self._owned))

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        for tp, offset in offsets.items():
            self._answered.answered(tp, offset)

    def highwater(self, partition: TopicPartition) -> int | None:
        assert self._consumer is not None
        highwater: int | None = self._consumer.highwater(partition)
        return highwater

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        assert self._consumer is not None
        polled: int | None = self._consumer.last_poll_timestamp(partition)
        return polled

    async def position(self, partition: TopicPartition) -> int:
        assert self._consumer is not None
        position: int = await self._consumer.position(partition)  # sought before it is handed on
        return position

    async def stop(self) -> None:
        """Leave: the loop has drained and committed, so the positions are final."""
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._heartbeats.beating.is_set():
            await self._heartbeats.leave()
        await self._roster.stop()
        if self._consumer is not None:
            await stop_consumer(self._consumer, "lookups")
