"""Consume → hand to the handler → commit, in one loop per consumer group.

- poll: `getmany` of the partitions not paused, with a short timeout cut to the handler's
  `wake_at`. aiokafka drops what it has prefetched of a paused partition when `getmany`
  looks at it, and fetches it again on resume; dropped part-way through, that data is also
  a reference cycle (a fetch's records and their iterator) that only a full collection
  frees. So a paused partition is left out of `getmany`, its prefetched records kept for
  its resume, and with every partition paused the loop waits for a record to finish
  instead, fetching at least every `_FETCH_AT_LEAST_EVERY` so that the consumer stays in
  its group (the group's heartbeats and rebalances run in aiokafka's own task).
- submit: each record gets a token in its partition's FIFO and goes to the handler
  (`consumers/engine/contract.py`). A handler that rejects a record (not yet) gets it again,
  with the rest of its partition's fetch, once the time it named has come; the partition is
  paused meanwhile. A handler that raises anything else does not stall its partition: the
  error is logged with the record's coordinates and counted, and the record is finished.
- pause: past `max_records_in_flight` every assigned partition is paused, and resumed once
  half of that has drained; the handler may also hold single partitions. Paused, not slept:
  the loop goes on turning (commits, the handler's poll), woken by each record finishing.
  Idle partitions of the `resting` topics are left out of fetches and looked at now and then
  (`consumers/engine/resting.py`).
- commit: per partition, one past the last contiguous finished record, at most once per
  `commit_interval`, and forced when partitions are revoked and at shutdown.
- fence: once commits have failed for the session timeout, the member has lost its
  partitions; it hands the handler nothing more until it is assigned partitions again or a
  commit succeeds (`consumers/engine/fence.py`).

An unfinished record is never committed: a crash at any moment replays it (at least once).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.abc import ConsumerRebalanceListener
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError

from consumers.engine.clients import stop_consumer
from consumers.engine.contract import GroupConsumer, Handler, Rejected, Token
from consumers.engine.fence import Fence
from consumers.engine.offsets import PartitionOffsets
from consumers.engine.resting import Resting
from service.observability import metrics

log = structlog.get_logger("switchboard.consumer")

POLL_TIMEOUT_MS: Final = 200
# A handler's wake-up is honoured within this, but never before it.
_MIN_POLL_MS: Final = 1
# Resume fetching once the records in flight fall to this share of the cap; a gap between
# the pause and resume points keeps the partitions from flapping at the boundary.
_RESUME_FRACTION: Final = 0.5
# With every partition paused the loop still fetches this often (dropping what was
# prefetched): aiokafka takes a consumer that has not fetched for max_poll_interval_ms
# (5 minutes by default) out of its group.
_FETCH_AT_LEAST_EVERY: Final = 30.0
# The handler hears of new partitions once the consumer knows where they are read from, or
# after this long anyway (reading committed offsets takes milliseconds).
_POSITIONS_WITHIN: Final = 30.0


@dataclass(frozen=True, slots=True)
class LoopSettings:
    max_records_in_flight: int
    commit_interval_seconds: float
    shutdown_grace_seconds: float
    rebalance_grace_seconds: float
    # The consumer's session timeout: commits failing for this long fence the member.
    fence_after_seconds: float | None = None


class _Partition:
    """A partition's FIFO, its open tokens, and what the handler has not taken yet, for one
    assignment of it."""

    __slots__ = ("backlog", "offsets", "open", "retry_at")

    def __init__(self) -> None:
        self.offsets = PartitionOffsets()
        self.open: dict[int, Token] = {}
        # Fetched, and refused by the handler from the head on: offered again in order, from
        # `retry_at` (None: at the next iteration). Never in flight, never committed.
        self.backlog: deque[ConsumerRecord] = deque()
        self.retry_at: float | None = None


class GroupLoop(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(
        self,
        consumer: Callable[[], GroupConsumer],
        handler: Handler,
        settings: LoopSettings,
        *,
        topics: list[str],
        role: str,
        clock: Callable[[], float] = time.time,
        resting: Resting | None = None,
    ) -> None:
        """`resting`: which idle partitions are left out of fetches (none by default)."""
        # Made at start: a Kafka client built and never started warns when it is collected.
        self._new_consumer = consumer
        self._consumer: GroupConsumer | None = None
        self._handler = handler
        self._settings = settings
        self._topics = topics
        self._role = role
        self._clock = clock
        self._partitions: dict[TopicPartition, _Partition] = {}
        self._resting = resting or Resting(())
        self._resting_now: frozenset[TopicPartition] = frozenset()
        # Bound once: every token of every record holds these two.
        self._on_done = self._finished
        self._on_abandon = self._abandoned
        self._in_flight = 0
        # Set each time a record finishes; drains wait on it instead of polling.
        self._progress = asyncio.Event()
        self._backpressure = False
        self._paused: set[TopicPartition] = set()
        self._stopping = asyncio.Event()
        self._last_commit = 0.0
        self._fetched_at = 0.0
        self._fence = Fence(settings.fence_after_seconds)
        # The tasks awaiting the positions of an assignment, each with its partitions not
        # revoked since.
        self._unpositioned: dict[asyncio.Task[None], set[TopicPartition]] = {}
        self.last_tick = time.monotonic()
        self.started = False
        # Set once the group has assigned partitions to this member (none is an answer too).
        self.joined = asyncio.Event()

    @property
    def role(self) -> str:
        return self._role

    @property
    def records_in_flight(self) -> int:
        return self._in_flight

    @property
    def partitions_assigned(self) -> int:
        return len(self._partitions)

    @property
    def partitions_resting(self) -> frozenset[TopicPartition]:
        """Left out of fetches while idle, as of the last turn (consumers/engine/resting.py)."""
        return self._resting_now

    @property
    def fenced(self) -> bool:
        return self._fence.fenced

    # Lifecycle

    async def start(self) -> None:
        consumer = self._new_consumer()
        await consumer.start()
        consumer.subscribe(self._topics, listener=self)
        self._consumer = consumer
        self.started = True

    def stop(self) -> None:
        """Ask the loop to stop fetching and drain; `run` returns when it is done."""
        self._stopping.set()

    async def run(self) -> None:
        consumer = self._consumer
        assert consumer is not None, "start() first"
        # getmany() waits out a group join before it returns, which can take seconds; racing
        # it against the stop signal lets SIGTERM during a rebalance start the drain at once.
        stopping = asyncio.create_task(self._stopping.wait())
        try:
            while not self._stopping.is_set():
                fetch = asyncio.create_task(self._fetch(consumer))
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
                    self._resting.took(tp)
                    self._take(tp, partition, records)
                self._offer_backlogs()
                if not self._fence.fenced:  # starts nothing of its own either (parked, held)
                    self._handler.poll()
                # A record finishing from here on wakes a loop that waits with every
                # partition paused (`_fetch`).
                self._progress.clear()
                self._sync_pauses()
                if time.monotonic() - self._last_commit >= self._settings.commit_interval_seconds:
                    await self._commit(self._partitions, probe=True)
                    self._update_partition_metrics()
            await self._drain(self._settings.shutdown_grace_seconds)
        finally:
            stopping.cancel()
            for task in list(self._unpositioned):
                task.cancel()
            await stop_consumer(consumer, self._role)
            self.started = False

    async def _fetch(self, consumer: GroupConsumer) -> dict[TopicPartition, list[ConsumerRecord]]:
        """Records of the partitions not paused; none, once a record has finished or the
        poll timeout has passed, when every partition is paused (see the module's doc)."""
        timeout_ms = self._poll_timeout_ms()
        fetching = [tp for tp in self._partitions if tp not in self._paused]
        now = time.monotonic()
        if fetching or not self._partitions or now - self._fetched_at >= _FETCH_AT_LEAST_EVERY:
            # No partition yet: getmany waits out the group's join.
            self._fetched_at = now
            return await consumer.getmany(*fetching, timeout_ms=timeout_ms)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._progress.wait(), timeout_ms / 1000)
        return {}

    def _poll_timeout_ms(self) -> int:
        wakes = [p.retry_at for p in self._partitions.values() if p.backlog and p.retry_at]
        if (wake := self._handler.wake_at()) is not None:
            wakes.append(wake)
        if not wakes:
            return POLL_TIMEOUT_MS
        wait_ms = int((min(wakes) - self._clock()) * 1000)
        return max(_MIN_POLL_MS, min(POLL_TIMEOUT_MS, wait_ms))

    # Records and tokens

    def _take(
        self, tp: TopicPartition, partition: _Partition, records: list[ConsumerRecord]
    ) -> None:
        if partition.backlog or self._fence.fenced:
            partition.backlog.extend(records)  # behind what is already waiting
            return
        for i, record in enumerate(records):
            if not self._submit(tp, partition, record):
                partition.backlog.extend(records[i:])
                return

    def _offer_backlogs(self) -> None:
        if self._fence.fenced:
            return
        now = self._clock()
        for tp, partition in self._partitions.items():
            backlog = partition.backlog
            if not backlog or (partition.retry_at is not None and now < partition.retry_at):
                continue
            partition.retry_at = None
            while backlog and self._submit(tp, partition, backlog[0]):
                backlog.popleft()
            # What was written behind it is fetched from now on, not at the next look.
            self._resting.took(tp)

    def _submit(self, tp: TopicPartition, partition: _Partition, record: ConsumerRecord) -> bool:
        """Hand one record to the handler; False when it rejected it (not now)."""
        partition.offsets.add(record.offset, record.timestamp)
        token = Token(
            tp, record.offset, record.timestamp, on_done=self._on_done, on_abandon=self._on_abandon
        )
        partition.open[record.offset] = token
        self._in_flight += 1
        try:
            self._handler.submit(record, token)
        except Rejected as rejected:
            # Rejected before touching the token, as the contract says; a handler that finished
            # it first has already taken it off the books.
            if partition.open.pop(record.offset, None) is not None:
                self._in_flight -= 1
            partition.offsets.withdraw(record.offset)
            partition.retry_at = rejected.retry_at
            return False
        except Exception:  # a record that never finishes would stall its partition for good
            metrics.HANDLER_ERRORS.labels(self._role).inc()
            log.exception("handler_failed", consumer=self._role, topic=tp.topic,
                          partition=tp.partition, offset=record.offset)  # fmt: skip
            token.done()
        return True

    def _finished(self, token: Token) -> None:
        partition = self._partitions.get(token.tp)
        if partition is None or partition.open.pop(token.offset, None) is None:
            return  # its partition was revoked and assigned again since: a stale token
        self._in_flight -= 1
        partition.offsets.finish(token.offset)
        self._progress.set()

    def _abandoned(self, token: Token) -> None:
        partition = self._partitions.get(token.tp)
        if partition is not None and partition.open.pop(token.offset, None) is not None:
            self._in_flight -= 1
            self._progress.set()

    # Pausing

    def _sync_pauses(self) -> None:
        cap = self._settings.max_records_in_flight
        if not self._backpressure and self._in_flight >= cap:
            self._backpressure = True
            log.info("consumer_paused", consumer=self._role, records_in_flight=self._in_flight)
        elif self._backpressure and self._in_flight <= cap * _RESUME_FRACTION:
            self._backpressure = False
            log.info("consumer_resumed", consumer=self._role, records_in_flight=self._in_flight)
        consumer = self._consumer
        assert consumer is not None
        resting: frozenset[TopicPartition] = frozenset()
        if self._backpressure or self._fence.fenced:
            wanted = set(self._partitions)
        else:
            wanted = {
                tp for tp, p in self._partitions.items() if p.backlog or self._handler.held(tp)
            }
            if self._resting.topics:
                # Those paused for their own records count as paused, not resting.
                resting = self._resting.resting(self._polled_at, self._waiting) - wanted
                wanted |= resting
        if to_pause := wanted - self._paused:
            consumer.pause(*to_pause)
        if to_resume := self._paused - wanted:
            consumer.resume(*to_resume)
        self._paused = wanted
        metrics.PARTITIONS_PAUSED.labels(self._role).set(len(wanted) - len(resting))
        metrics.PARTITIONS_RESTING.labels(self._role).set(len(resting))
        self._resting_now = resting

    def _polled_at(self, tp: TopicPartition) -> int | None:
        assert self._consumer is not None
        try:
            return self._consumer.last_poll_timestamp(tp)
        except (AssertionError, AttributeError, IllegalStateError):
            # No longer assigned to the consumer, the revoke on its way: aiokafka asserts it
            # (and without assertions, `python -O`, reads the state it no longer has).
            return None

    def _waiting(self, tp: TopicPartition) -> bool:
        partition = self._partitions.get(tp)
        return partition is not None and bool(partition.backlog)

    # Commit

    async def _commit(
        self, partitions: dict[TopicPartition, _Partition], *, probe: bool = False
    ) -> None:
        """Commit what finished; with `probe`, when nothing did, the last offsets again if
        the fence wants to hear from the coordinator."""
        self._last_commit = time.monotonic()
        offsets = {
            tp: offset
            for tp, p in partitions.items()
            if (offset := p.offsets.to_commit()) is not None
        }
        if not offsets and probe and self._fence.probe_due():
            offsets = {
                tp: offset
                for tp, p in partitions.items()
                if (offset := p.offsets.last_committed) is not None
            }
        if not offsets or self._consumer is None:
            return
        attempt = self._fence.attempt()
        try:
            await self._consumer.commit(offsets)
        except (CommitFailedError, IllegalStateError, KafkaError, RuntimeError) as exc:
            # Not fatal: the offsets stay uncommitted and are tried again at the next
            # interval or on revoke; at worst their records are delivered again. With the
            # brokers gone, uvloop's transport raises RuntimeError ("the handler is closed")
            # for a commit written to a connection aiokafka has just closed.
            metrics.COMMITS.labels("failed").inc()
            log.warning("commit_failed", consumer=self._role, error=repr(exc))
            if self._fence.failed(attempt):
                self._fenced(True, "commits_failing")
            return
        metrics.COMMITS.labels("ok").inc()
        if self._fence.succeeded():
            self._fenced(False, "commit_succeeded")
        for tp, offset in offsets.items():
            # A rebalance can run while the commit is awaited: a partition revoked meanwhile
            # is no longer ours to note.
            if (partition := partitions.get(tp)) is not None:
                partition.offsets.last_committed = offset

    # Rebalance (called by the consumer between polls)

    async def on_partitions_revoked(self, revoked: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("revoked").inc()
        leaving = {tp: self._partitions[tp] for tp in revoked if tp in self._partitions}
        for pending in self._unpositioned.values():
            pending.difference_update(revoked)  # the handler is not to hear of them now
        # Records the handler holds without working on them (not due yet) are given up first,
        # so that the grace period is spent only on work that can finish.
        self._handler.revoked(list(leaving))
        await self._finish(leaving, self._settings.rebalance_grace_seconds)
        self._resting.revoked(leaving)
        for tp in leaving:
            del self._partitions[tp]
            self._paused.discard(tp)
            # A partition that moved away leaves no stale series behind.
            for gauge in (metrics.OLDEST_INCOMPLETE_AGE, metrics.CONSUMER_LAG):
                with contextlib.suppress(KeyError):
                    gauge.remove(tp.topic, str(tp.partition))
        metrics.PARTITIONS_ASSIGNED.labels(self._role).set(len(self._partitions))
        log.info("partitions_revoked", consumer=self._role, partitions=[str(tp) for tp in revoked])

    def _tell_when_positioned(self, assigned: list[TopicPartition]) -> None:
        """Tell the handler of its new partitions once the consumer knows where each is read
        from. A previous owner still in its revoke (a group waits for it the rebalance timeout
        at most) makes a key's state durable before it commits the record that changed it:
        read after the committed offsets, the handler's state knows every change of the
        records before them (docs/ordering.md, "A new owner"). Waited for in a task: aiokafka
        sends no heartbeat until this listener returns. No record of the partitions comes
        before their positions are known either."""
        pending = set(assigned)
        task = asyncio.create_task(self._positioned(assigned, pending))
        self._unpositioned[task] = pending
        task.add_done_callback(self._unpositioned.pop)

    async def _positioned(
        self, assigned: list[TopicPartition], pending: set[TopicPartition]
    ) -> None:
        consumer = self._consumer
        assert consumer is not None, "assigned by a started consumer"
        try:
            async with asyncio.timeout(_POSITIONS_WITHIN):
                for tp in assigned:
                    if tp in pending:
                        await consumer.position(tp)
        except (TimeoutError, KafkaError, IllegalStateError) as exc:
            # Revoked meanwhile, or the brokers away: told anyway, as a record would tell it.
            log.warning("positions_unknown", consumer=self._role, error=repr(exc))
        # In assignment order; those revoked meanwhile are not this member's to read about.
        if not (positioned := [tp for tp in assigned if tp in pending]):
            return
        try:
            self._handler.assigned(positioned)
        except Exception:  # a bug of ours, raised in this task: said and counted here, or
            # only asyncio's "exception was never retrieved" would tell, at collection
            log.exception("handler_assigned_failed", consumer=self._role,
                          partitions=[str(tp) for tp in positioned])  # fmt: skip
            metrics.HANDLER_ERRORS.labels(self._role).inc()

    def _fenced(self, on: bool, why: str) -> None:
        metrics.CONSUMER_FENCED.labels(self._role).set(int(on))
        log.warning("consumer_fenced" if on else "consumer_unfenced", consumer=self._role,
                    reason=why, records_in_flight=self._in_flight)  # fmt: skip

    async def on_partitions_assigned(self, assigned: list[TopicPartition]) -> None:
        metrics.REBALANCES.labels("assigned").inc()
        if self._fence.assigned():
            self._fenced(False, "assigned")
        for tp in assigned:
            self._partitions.setdefault(tp, _Partition())
        self._resting.assigned(assigned)
        self._tell_when_positioned(assigned)
        if self._backpressure and self._consumer is not None:
            self._consumer.pause(*assigned)
            self._paused.update(assigned)
        metrics.PARTITIONS_ASSIGNED.labels(self._role).set(len(self._partitions))
        self.joined.set()
        log.info("partitions_assigned", consumer=self._role,
                 partitions=[str(tp) for tp in assigned])  # fmt: skip

    # Drain

    async def _drain(self, grace: float) -> None:
        log.info("draining", consumer=self._role, records_in_flight=self._in_flight,
                 grace_seconds=grace)  # fmt: skip
        self._handler.revoked(list(self._partitions))
        await self._finish(self._partitions, grace)

    async def _finish(self, partitions: dict[TopicPartition, _Partition], grace: float) -> None:
        """Give the partitions' records `grace` seconds, commit what finished, abandon the rest."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while any(p.open for p in partitions.values()):
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            self._progress.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), remaining)
        await self._commit(partitions)
        cancelled = [
            work
            for p in partitions.values()
            for token in list(p.open.values())
            for work in token.abandon()
        ]
        # Cancelled tasks end before the partitions change hands: none of them produces after.
        tasks = [w for w in cancelled if isinstance(w, asyncio.Future)]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)

    # Metrics

    def _update_partition_metrics(self) -> None:
        assert self._consumer is not None
        now_ms = self._clock() * 1000
        for tp, p in self._partitions.items():
            labels = (tp.topic, str(tp.partition))
            oldest = p.offsets.oldest_unfinished_timestamp_ms()
            metrics.OLDEST_INCOMPLETE_AGE.labels(*labels).set(
                0.0 if oldest is None else max(0.0, (now_ms - oldest) / 1000)
            )
            highwater = self._consumer.highwater(tp)
            done = p.offsets.last_committed
            if highwater is not None and done is not None:
                metrics.CONSUMER_LAG.labels(*labels).set(max(0, highwater - done))
