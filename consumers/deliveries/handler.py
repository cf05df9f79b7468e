"""The delivery stage: first attempts from the deliveries topic, and the retry tiers.

One consumer group reads the deliveries topic and every tier topic (`<prefix>.<wait>`), all
keyed by subscription id and with the same partition count, with the range assignor: the
replica that owns partition p of one owns partition p of all of them, so every delivery to a
subscription, first attempt or retry, is made by one replica, with that replica's queue,
token bucket, concurrency cap and circuit for the endpoint. Their limits are therefore the
fleet's. A rebalance hands a partition over after the old owner's grace: only the jobs it
still runs then (cancelled, read again by the new owner) can overlap with the new owner's.

A first attempt is due at once. Records of a tier are produced
with about the same wait, so each partition is close to ordered by due time. A record that is
not due yet is rejected (`Rejected(retry_at=due)`): the loop keeps it, and the rest of its
partition's fetch, outside the in-flight count, pauses the partition (the loop goes on, so the
consumer stays in its group) and offers it again at its due time. Nothing is dispatched before
it is due: the comparison is against the wall clock, whose time the due times were computed
in. A waiting tier therefore holds one fetch per partition in memory and no slot of the
in-flight cap, however far away its due times are.

A dispatched record becomes a job in the delivery pool, finished once its attempt and what
follows are durable.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Final, NamedTuple

import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition

from consumers.deliveries.ordering import LoadPartition, OrderedDeliveries, ReadAt
from consumers.deliveries.park_index import ParkIndex
from consumers.deliveries.parking import BATCH, Parking
from consumers.engine.contract import Producer, Rejected, Token
from consumers.engine.tasks import finish_when_done
from consumers.events.quarantine import Quarantine
from service.delivery.job import DeliveryJob, JobQueue
from service.delivery.pool import FindSubscription
from service.delivery.record import DeliveryRecord, decode, due_at_ms, subscription_of
from service.events.envelope import Event
from service.observability import metrics
from service.observability.tracing import Tracing
from service.ordering.control import RELEASE, control_of, decode_release
from service.ordering.keys import key_of
from service.retries.policy import RetrySchedule

log = structlog.get_logger("switchboard.retries")

ROLE = "deliveries"
# The tiers' gauges are refreshed at most this often; they are read by a scrape every 15 s+.
_GAUGE_INTERVAL: Final = 1.0
_HELD: Final = metrics.PARTITIONS_HELD_FOR_ENDPOINT
# An endpoint that took records from a partition this recently may be waiting behind a held
# record (its next ones are in the held fetch, unseen): long against a hold (at most 1 s).
_SEEN_SECONDS: Final = 30.0


class _Dispatched(NamedTuple):
    token: Token
    job: DeliveryJob
    due_ms: int
    stamp_ms: int


class OrderingSetup(NamedTuple):
    producer: Producer
    topic: str
    deliveries_topic: str
    load: LoadPartition
    read_at: ReadAt
    idle_seconds: float


class DeliveryHandler:
    def __init__(
        self,
        *,
        schedule: RetrySchedule,
        pool: JobQueue,
        find: FindSubscription,
        quarantine: Quarantine,
        clock: Callable[[], float] = time.time,
        tracing: Tracing | None = None,
        ordering: OrderingSetup | None = None,
        parking: Parking | None = None,
    ) -> None:
        self._schedule = schedule
        self._tracing = tracing
        self._pool = pool
        self._find = find
        self._quarantine = quarantine
        self._clock = clock
        # Per partition: the head waiting for its due time (due ms, timestamp ms), for the
        # gauges; and the records dispatched and not finished, by offset, for the gauges and
        # for a revoke.
        self._waiting: dict[TopicPartition, tuple[int, int]] = {}
        self._running: dict[TopicPartition, dict[int, _Dispatched]] = {}
        self._gauges_at = 0.0
        # Past an endpoint's horizon, its records are parked rather than its partition held
        # when others share it (consumers/deliveries/parking.py); None: always held.
        self._parking = parking
        # Per partition: the endpoints whose records it had lately, and when.
        self._seen: dict[int, dict[str, float]] = {}
        # Ordered subscriptions' keys (consumers/deliveries/ordering.py); None: no ordering
        # topic (tests of the tiers alone), and ordered subscriptions are delivered unordered.
        self._ordered = (
            None
            if ordering is None
            else OrderedDeliveries(
                producer=ordering.producer,
                topic=ordering.topic,
                deliveries_topic=ordering.deliveries_topic,
                start=self._start,
                load=ordering.load,
                read_at=ordering.read_at,
                find=find,
                idle_seconds=ordering.idle_seconds,
                clock=clock,
            )
        )

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        tp = TopicPartition(record.topic, record.partition)
        due_ms = due_at_ms(record.headers)
        now = self._clock()
        if due_ms > int(now * 1000):
            self._waiting[tp] = (due_ms, record.timestamp)
            raise Rejected(retry_at=due_ms / 1000)
        sub_id = subscription_of(record.headers)
        parking = self._parking
        index = None
        if parking is not None:
            index = parking.index(tp.partition)  # Rejected while it is being read
            if index.contains(sub_id, (tp.topic, record.offset)):
                token.done()  # parked before a crash or rebalance: taken up from there
                return
            self._seen.setdefault(tp.partition, {})[sub_id] = now
            if index.has(sub_id):
                parking.park(tp, record, sub_id, token)  # behind its parked deliveries
                return
        # The endpoint's queue is at its horizon (service/delivery/horizon.py): the record
        # stays in Kafka, and its partition waits, until the endpoint has room again; unless
        # another endpoint of the partition would run dry meanwhile, then it is parked.
        wait = self._pool.wait_before_more(sub_id)
        if wait is not None:
            if (
                parking is not None
                and index is not None
                and self._others_starve(tp.partition, sub_id, wait, index)
            ):
                parking.park(tp, record, sub_id, token)
                return
            _HELD.inc()
            raise Rejected(retry_at=now + wait)
        self._waiting.pop(tp, None)
        self._admit(tp, record, token)

    def _others_starve(self, partition: int, sub_id: str, wait: float, index: ParkIndex) -> bool:
        """Whether holding the partition for `wait` seconds would let another endpoint that
        took records from it lately run dry (one that is parked itself does not wait)."""
        seen = self._seen.get(partition, {})
        now = self._clock()
        for other, at in list(seen.items()):
            if now - at > _SEEN_SECONDS:
                del seen[other]
            elif other != sub_id and not index.has(other) and self._pool.drains_in(other) < wait:
                return True
        return False

    def _take_parked(self, record: ConsumerRecord, token: Token) -> bool:
        """A parked delivery read back: taken if its endpoint has room."""
        if self._pool.wait_before_more(subscription_of(record.headers)) is not None:
            return False
        try:
            self._admit(TopicPartition(record.topic, record.partition), record, token)
        except Rejected:
            return False  # its partition's ordering keys are being read: next time
        return True

    def _admit(self, tp: TopicPartition, record: ConsumerRecord, token: Token) -> None:
        """Take a record that is due and whose endpoint has room."""
        control = control_of(record.headers)
        if control is not None:
            self._control(tp, record, token, control)
            return
        try:
            delivery = decode(record.value)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            self._quarantine_record(tp, record, token, "bad_delivery_record", str(exc))
            return
        sub = self._find(delivery.subscription_id)
        if self._ordered is not None and sub is not None and sub.ordering is not None:
            event = delivery.event.event()
            key = key_of(event, sub.ordering.key)
            if key is not None:
                self._ordered.submit(tp, record, token, delivery, key=(sub, key), event=event)
                return
            metrics.ORDERING_KEY_MISSING.inc()
        self._start(
            tp, record.offset, delivery, token, lambda _: token.done(), sequence=delivery.sequence
        )

    def poll(self) -> None:
        if self._parking is not None:
            self._parking.poll(lambda sub_id: self._pool.room(sub_id, BATCH), self._take_parked)
        if self._clock() - self._gauges_at >= _GAUGE_INTERVAL:
            self._update_gauges()
            if self._ordered is not None:
                self._ordered.poll()

    def held(self, tp: TopicPartition) -> bool:
        return False

    def wake_at(self) -> float | None:
        return None

    async def close(self) -> None:
        """Once the loop has stopped: the state reads under way are stopped and waited for."""
        if self._parking is not None:
            await self._parking.close()
        if self._ordered is not None:
            await self._ordered.close()

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        # The state topics are co-partitioned with the deliveries topic and its tiers.
        for p in {tp.partition for tp in tps}:
            if self._parking is not None:
                self._parking.load(p)
            if self._ordered is not None:
                self._ordered.load(p)

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        if self._ordered is not None:
            self._ordered.revoked(tps)
        if self._parking is not None:
            self._parking.revoked(tps)
        for p in {tp.partition for tp in tps}:
            self._seen.pop(p, None)
        for tp in tps:
            self._waiting.pop(tp, None)
            # Deliveries still queued behind their endpoint's limits have sent nothing: given
            # up at once, for the partition's next owner to make, so that two replicas never
            # deliver to one endpoint together beyond the requests already on the wire (which
            # get the grace period to finish).
            for dispatched in list(self._running.pop(tp, {}).values()):
                if not dispatched.job.started:
                    dispatched.token.abandon()
            if not self._schedule.is_tier(tp.topic):
                continue
            tier = self._schedule.tier_of_topic(tp.topic)
            for gauge in (metrics.RETRY_OLDEST_PENDING_AGE, metrics.RETRY_OVERDUE):
                gauge.labels(tier).set(0)

    def _control(
        self, tp: TopicPartition, record: ConsumerRecord, token: Token, kind: bytes
    ) -> None:
        if kind == RELEASE and self._ordered is not None:
            try:
                release = decode_release(record.value)
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                self._quarantine_record(tp, record, token, "bad_control_record", str(exc))
                return
            self._ordered.release(tp, (release.subscription_id, release.key), token)
            return
        self._quarantine_record(tp, record, token, "bad_control_record",
                                f"unknown control {kind[:40]!r}")  # fmt: skip

    def _quarantine_record(
        self, tp: TopicPartition, record: ConsumerRecord, token: Token, reason: str, error: str
    ) -> None:
        # Only this service writes here; a record it cannot read is a bug or a stranger's
        # write. Quarantined with its reason, so the partition keeps moving and nothing is lost.
        metrics.INTERNAL_RECORDS_INVALID.labels("delivery").inc()
        log.error("delivery_record_invalid", topic=tp.topic, partition=tp.partition,
                  offset=record.offset, reason=reason, error=error)  # fmt: skip
        finish_when_done(token, self._quarantine.put(record, reason, error), ROLE)

    def _start(
        self, tp: TopicPartition, offset: int, delivery: DeliveryRecord, token: Token | None,
        on_done: Callable[[DeliveryJob], None], *, sequence: int | None,
        event: Event | None = None,
    ) -> DeliveryJob:  # fmt: skip
        """Queue the delivery's attempt in the pool. With a token (the job's source record,
        at `offset`), the job is the record's: given up with it on revoke, and counted in the
        tiers' gauges. `on_done` is called once the job finishes. `event`: the delivery's,
        when the caller has built it already (its decoded data is kept with it)."""
        running = self._running.setdefault(tp, {})

        def done() -> None:
            if token is not None:
                running.pop(offset, None)
            on_done(job)

        if event is None:
            event = delivery.event.event()
        job = DeliveryJob(
            event,
            delivery.subscription_id,
            self._find(delivery.subscription_id),
            done,
            origin=delivery.origin,
            attempts=delivery.attempts,
            sent=delivery.sent,
            first_attempt_at=delivery.first_attempt_at,
            last_error=delivery.last_error,
            replay_of=delivery.replay_of,
            sequence=sequence,
        )
        if token is not None:
            due_ms = int(delivery.due_at * 1000)
            running[offset] = _Dispatched(token, job, due_ms, token.timestamp_ms)
            token.attach(job)
        if self._tracing is None:
            self._pool.submit(job)
            return job
        # Its parent is the handoff span that wrote the record (carried in its trace context).
        with self._tracing.consuming(tp.topic, tp.partition, offset, event) as parent:
            job.trace_parent = parent
            self._pool.submit(job)
        return job

    def _update_gauges(self) -> None:
        """Per tier: the age of the oldest record waiting or running, and how late it is."""
        now = self._clock()
        self._gauges_at = now
        oldest: dict[str, float] = {}
        overdue: dict[str, float] = {}
        for tp in {*self._waiting, *self._running}:
            if not self._schedule.is_tier(tp.topic):
                continue  # the deliveries topic: its lag is the loop's
            tier = self._schedule.tier_of_topic(tp.topic)
            records = [(d.due_ms, d.stamp_ms) for d in self._running.get(tp, {}).values()]
            if tp in self._waiting:
                records.append(self._waiting[tp])
            age = max((now - stamp / 1000 for _, stamp in records), default=0.0)
            late = max((now - due / 1000 for due, _ in records), default=0.0)
            oldest[tier] = max(oldest.get(tier, 0.0), age, 0.0)
            overdue[tier] = max(overdue.get(tier, 0.0), late, 0.0)
        for tier, age in oldest.items():
            metrics.RETRY_OLDEST_PENDING_AGE.labels(tier).set(age)
        for tier, late in overdue.items():
            metrics.RETRY_OVERDUE.labels(tier).set(late)
