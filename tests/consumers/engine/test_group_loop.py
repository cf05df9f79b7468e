"""The group loop without a broker: the local backend stands in for Kafka, as in arroyo."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import pytest
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import IllegalStateError

from consumers.engine.contract import Rejected, Token
from consumers.engine.group_loop import GroupLoop, LoopSettings
from consumers.engine.local import LocalBroker, LocalConsumer
from consumers.engine.resting import Resting
from service.observability import metrics
from tools.receiver import wait_until

TOPIC = "events"
TP0 = TopicPartition(TOPIC, 0)
TP1 = TopicPartition(TOPIC, 1)


@dataclass
class HoldingHandler:
    """Keeps every token until the test finishes it; can hold partitions and fail records."""

    tokens: dict[tuple[int, int], Token] = field(default_factory=dict)
    held_partitions: set[TopicPartition] = field(default_factory=set)
    fail_offsets: set[int] = field(default_factory=set)
    # offset -> the time before which the handler rejects it
    not_before: dict[int, float] = field(default_factory=dict)
    offered: list[int] = field(default_factory=list)
    revoked_calls: list[list[TopicPartition]] = field(default_factory=list)
    polls: int = 0

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        self.offered.append(record.offset)
        if (at := self.not_before.get(record.offset)) is not None and time.time() < at:
            raise Rejected(retry_at=at)
        if record.offset in self.fail_offsets:
            raise RuntimeError("a bug in the handler")
        self.tokens[(record.partition, record.offset)] = token

    def poll(self) -> None:
        self.polls += 1

    def held(self, tp: TopicPartition) -> bool:
        return tp in self.held_partitions

    def wake_at(self) -> float | None:
        return None

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        return None

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        self.revoked_calls.append(list(tps))

    def finish(self, partition: int, *offsets: int) -> None:
        for offset in offsets:
            self.tokens[(partition, offset)].done()


@dataclass
class Running:
    broker: LocalBroker
    consumer: LocalConsumer
    handler: HoldingHandler
    loop: GroupLoop
    task: asyncio.Task[None]

    def committed(self, tp: TopicPartition = TP0) -> int | None:
        return self.broker.commits.get(("group", tp))

    def add(self, count: int, partition: int = 0) -> None:
        for i in range(count):
            self.broker.append(TOPIC, b"v%d" % i, partition=partition)


def loop_settings(**changes: float) -> LoopSettings:
    values: dict[str, float] = {
        "max_records_in_flight": 100,
        "commit_interval_seconds": 0.0,
        "shutdown_grace_seconds": 0.2,
        "rebalance_grace_seconds": 0.2,
        **changes,
    }
    return LoopSettings(
        max_records_in_flight=int(values["max_records_in_flight"]),
        commit_interval_seconds=values["commit_interval_seconds"],
        shutdown_grace_seconds=values["shutdown_grace_seconds"],
        rebalance_grace_seconds=values["rebalance_grace_seconds"],
        fence_after_seconds=values.get("fence_after_seconds"),
    )


@pytest.fixture
async def running(request: pytest.FixtureRequest) -> AsyncIterator[Running]:
    marker = request.node.get_closest_marker("loop")
    options = dict(marker.kwargs) if marker is not None else {}
    broker = LocalBroker()
    broker.create_topic(TOPIC, partitions=2)
    consumer = LocalConsumer(broker, "group", max_poll_records=options.pop("max_poll", 500))
    handler = HoldingHandler()
    loop = GroupLoop(
        lambda: consumer, handler, loop_settings(**options), topics=[TOPIC], role="test"
    )
    await loop.start()
    task = asyncio.create_task(loop.run())
    run = Running(broker, consumer, handler, loop, task)
    assert await wait_until(loop.joined.is_set, within=2)
    yield run
    loop.stop()
    await asyncio.wait_for(task, 5)


async def test_commits_only_the_contiguous_finished_offsets(running: Running) -> None:
    running.add(5)
    assert await wait_until(lambda: len(running.handler.tokens) == 5, within=2)
    running.handler.finish(0, 1, 2, 4)  # out of order, 0 still running
    await asyncio.sleep(0.05)
    assert running.committed() is None
    running.handler.finish(0, 0)
    assert await wait_until(lambda: running.committed() == 3, within=2)  # 3 holds the rest
    running.handler.finish(0, 3)
    assert await wait_until(lambda: running.committed() == 5, within=2)
    assert running.loop.records_in_flight == 0


@pytest.mark.loop(max_records_in_flight=4, max_poll=2)
async def test_backpressure_pauses_every_partition_keeps_polling_and_resumes(
    running: Running,
) -> None:
    running.add(6, partition=0)
    running.add(6, partition=1)
    assert await wait_until(lambda: running.consumer.paused == {TP0, TP1}, within=2)
    taken = len(running.handler.tokens)
    assert 4 <= taken <= 6  # the cap, plus at most the fetch that crossed it
    polls, fetches = running.handler.polls, running.consumer.fetches
    await asyncio.sleep(0.3)  # longer than the loop's poll timeout
    assert running.handler.polls > polls  # paused, not asleep: the loop goes on turning
    # but does not ask for records: aiokafka would drop what it prefetched of a paused
    # partition, to fetch it again on resume.
    assert running.consumer.fetches == fetches
    assert len(running.handler.tokens) == taken
    # Resumed at half the cap: more records are taken, up to the cap again.
    for partition, offset in list(running.handler.tokens)[: taken - 2]:
        running.handler.finish(partition, offset)
    assert await wait_until(lambda: len(running.handler.tokens) > taken, within=2)
    assert await wait_until(lambda: running.consumer.paused == {TP0, TP1}, within=2)


async def test_a_held_partition_stays_paused_while_others_flow(running: Running) -> None:
    running.handler.held_partitions.add(TP1)
    running.add(1, partition=0)
    assert await wait_until(lambda: running.consumer.paused == {TP1}, within=2)
    running.handler.held_partitions.clear()
    assert await wait_until(lambda: not running.consumer.paused, within=2)


async def test_revoke_commits_what_finished_and_abandons_the_rest(running: Running) -> None:
    running.add(3)
    assert await wait_until(lambda: len(running.handler.tokens) == 3, within=2)
    work = asyncio.get_running_loop().create_future()
    running.handler.tokens[(0, 2)].attach(work)
    running.handler.finish(0, 0)
    running.consumer.reassign([TP1])  # partition 0 moves to another member
    assert await wait_until(lambda: TP0 not in running.consumer.assignment, within=2)
    # The finished record is committed on the way out; the others are read again elsewhere.
    assert running.committed() == 1
    assert work.cancelled()
    assert not running.handler.tokens[(0, 1)].open
    assert running.loop.records_in_flight == 0
    assert [TP0] in running.handler.revoked_calls
    # A token finishing after its partition left changes nothing.
    running.handler.tokens[(0, 1)].done()
    assert running.committed() == 1


async def test_revoke_waits_for_work_that_finishes_within_the_grace(running: Running) -> None:
    running.add(2)
    assert await wait_until(lambda: len(running.handler.tokens) == 2, within=2)
    running.handler.finish(0, 0)
    asyncio.get_running_loop().call_later(0.05, running.handler.finish, 0, 1)
    running.consumer.reassign([TP1])
    assert await wait_until(lambda: TP0 not in running.consumer.assignment, within=2)
    assert running.committed() == 2


async def test_a_handler_error_neither_stalls_the_partition_nor_stops_the_loop(
    running: Running,
) -> None:
    before = metrics.HANDLER_ERRORS.labels("test")._value.get()
    running.handler.fail_offsets.add(1)
    running.add(3)
    assert await wait_until(lambda: len(running.handler.tokens) == 2, within=2)
    running.handler.finish(0, 0, 2)
    assert await wait_until(lambda: running.committed() == 3, within=2)
    assert metrics.HANDLER_ERRORS.labels("test")._value.get() == before + 1
    assert not running.task.done()


async def test_a_failed_commit_is_tried_again(running: Running) -> None:
    running.consumer.fail_commits = True
    running.add(1)
    assert await wait_until(lambda: len(running.handler.tokens) == 1, within=2)
    running.handler.finish(0, 0)
    await asyncio.sleep(0.05)
    assert running.committed() is None
    running.consumer.fail_commits = False
    assert await wait_until(lambda: running.committed() == 1, within=2)


@pytest.mark.loop(shutdown_grace_seconds=5)
async def test_shutdown_drains_then_commits(running: Running) -> None:
    running.add(2)
    assert await wait_until(lambda: len(running.handler.tokens) == 2, within=2)
    running.loop.stop()
    await asyncio.sleep(0.05)
    assert not running.task.done()  # draining: waiting for the records in flight
    running.handler.finish(0, 0, 1)
    await asyncio.wait_for(running.task, 2)
    assert running.committed() == 2
    assert running.consumer.stopped


async def test_a_rejected_record_waits_outside_the_cap_and_holds_only_its_partition(
    running: Running,
) -> None:
    due = time.time() + 0.3
    running.handler.not_before[1] = due
    running.add(3, partition=0)
    running.add(1, partition=1)
    assert await wait_until(lambda: (0, 0) in running.handler.tokens, within=2)
    assert await wait_until(lambda: (1, 0) in running.handler.tokens, within=2)
    # Record 1 was refused: it and the record behind it wait, its partition paused, and
    # neither counts as in flight; the other partition flows.
    assert running.consumer.paused == {TP0}
    assert running.loop.records_in_flight == 2
    assert (0, 2) not in running.handler.tokens
    running.handler.finish(0, 0)
    assert await wait_until(lambda: running.committed() == 1, within=2)
    # Offered again at its time, not before, then in order with the one behind it.
    assert await wait_until(lambda: (0, 2) in running.handler.tokens, within=2)
    assert time.time() >= due
    assert not running.consumer.paused
    running.handler.finish(0, 1, 2)
    assert await wait_until(lambda: running.committed() == 3, within=2)


async def test_a_revoke_drops_what_was_rejected_uncommitted(running: Running) -> None:
    running.handler.not_before[0] = time.time() + 60
    running.add(2)
    assert await wait_until(lambda: running.consumer.paused == {TP0}, within=2)
    running.consumer.reassign([TP1])
    assert await wait_until(lambda: TP0 not in running.consumer.assignment, within=2)
    assert running.committed() is None
    assert running.loop.records_in_flight == 0


async def test_a_partition_revoked_while_a_commit_is_awaited_stops_nothing(
    running: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    commit = running.consumer.commit
    revoked_once = False

    async def commit_during_a_rebalance(offsets: dict[TopicPartition, int]) -> None:
        # As with aiokafka: the revoke callback runs while the loop awaits its commit.
        nonlocal revoked_once
        if not revoked_once:
            revoked_once = True
            await running.loop.on_partitions_revoked([TP0])
        await commit(offsets)

    monkeypatch.setattr(running.consumer, "commit", commit_during_a_rebalance)
    running.add(2)
    assert await wait_until(lambda: len(running.handler.tokens) == 2, within=2)
    running.handler.finish(0, 0, 1)
    assert await wait_until(lambda: revoked_once, within=2)
    running.add(1, partition=1)
    assert await wait_until(lambda: (1, 0) in running.handler.tokens, within=2)
    assert not running.task.done()


# The fence (consumers/engine/fence.py): commits failing for the session timeout mean the
# group has given the partitions to others; the loop hands out nothing more until it is
# assigned partitions again or a commit goes through.


@pytest.mark.loop(fence_after_seconds=0.3)
async def test_commits_failing_for_the_session_timeout_stop_records_until_reassigned(
    running: Running,
) -> None:
    running.add(1)
    assert await wait_until(lambda: len(running.handler.tokens) == 1, within=2)
    running.consumer.fail_commits = True
    running.handler.finish(0, 0)
    assert await wait_until(lambda: running.loop.fenced, within=2)
    # Paused at the loop's next turn: the fence is raised by a commit, after the turn's pauses.
    assert await wait_until(lambda: running.consumer.paused == {TP0, TP1}, within=2)
    running.add(2, partition=0)
    running.add(1, partition=1)
    polls = running.handler.polls
    await asyncio.sleep(0.2)
    assert running.handler.offered == [0]  # fetched or not, nothing more reaches the handler
    assert running.handler.polls == polls  # nor is it polled to start work of its own
    # The group rebalances: partition 0 went to another member while this one was away.
    running.consumer.reassign([TP1])
    assert await wait_until(lambda: (1, 0) in running.handler.tokens, within=2)
    assert not running.loop.fenced
    assert not running.consumer.paused
    assert (0, 1) not in running.handler.tokens  # read by partition 0's new owner instead


@pytest.mark.loop(fence_after_seconds=0.3)
async def test_an_idle_loop_probes_and_is_fenced_then_a_commit_that_succeeds_lifts_it(
    running: Running,
) -> None:
    running.add(1)
    assert await wait_until(lambda: len(running.handler.tokens) == 1, within=2)
    running.handler.finish(0, 0)
    assert await wait_until(lambda: running.committed() == 1, within=2)
    # Nothing left to commit: only the loop's probes can tell that the coordinator is gone.
    running.consumer.fail_commits = True
    assert await wait_until(lambda: running.loop.fenced, within=2)
    running.add(2)
    await asyncio.sleep(0.2)
    assert running.handler.offered == [0]
    # Still a member after all: a probe goes through, and what waited is offered in order.
    running.consumer.fail_commits = False
    assert await wait_until(lambda: len(running.handler.tokens) == 3, within=2)
    assert not running.loop.fenced
    assert running.handler.offered == [0, 1, 2]
    running.handler.finish(0, 1, 2)
    assert await wait_until(lambda: running.committed() == 3, within=2)


@pytest.mark.loop(fence_after_seconds=5)
async def test_a_commit_failing_for_less_than_the_session_timeout_fences_nothing(
    running: Running,
) -> None:
    failed_before = metrics_failed()
    running.consumer.fail_commits = True
    running.add(1)
    assert await wait_until(lambda: len(running.handler.tokens) == 1, within=2)
    running.handler.finish(0, 0)
    assert await wait_until(lambda: metrics_failed() > failed_before, within=2)
    running.add(1)
    assert await wait_until(lambda: (0, 1) in running.handler.tokens, within=2)
    assert not running.loop.fenced


def metrics_failed() -> float:
    value: float = metrics.COMMITS.labels("failed")._value.get()
    return value


@contextlib.asynccontextmanager
async def resting_loop(
    consumer: LocalConsumer, role: str, *, look_every: float, quiet_seconds: float
) -> AsyncIterator[tuple[HoldingHandler, GroupLoop, asyncio.Task[None]]]:
    """A loop over the events topic and a resting "tier" topic of the consumer's broker."""
    handler = HoldingHandler()
    loop = GroupLoop(
        lambda: consumer, handler, loop_settings(), topics=[TOPIC, "tier"], role=role,
        resting=Resting(["tier"], look_every=look_every, quiet_seconds=quiet_seconds),
    )  # fmt: skip
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        yield handler, loop, task
    finally:
        loop.stop()
        await asyncio.wait_for(task, 5)


async def test_idle_partitions_of_resting_topics_are_fetched_only_when_looked_at() -> None:
    broker = LocalBroker()
    broker.create_topic(TOPIC, partitions=1)
    broker.create_topic("tier", partitions=2)
    tier0, tier1 = TopicPartition("tier", 0), TopicPartition("tier", 1)
    broker.append("tier", b"waiting since before the assignment", partition=0)
    consumer = LocalConsumer(broker, "group")
    async with resting_loop(consumer, "resting", look_every=0.3, quiet_seconds=0.2) as running:
        handler = running[0]
        # Newly assigned: read from its committed offset before anything rests.
        assert await wait_until(lambda: (0, 0) in handler.tokens, within=2)
        handler.finish(0, 0)
        assert await wait_until(lambda: {tier0, tier1} <= consumer.paused, within=2)
        assert TP0 not in consumer.paused
        assert metrics.PARTITIONS_RESTING.labels("resting")._value.get() == 2
        assert metrics.PARTITIONS_PAUSED.labels("resting")._value.get() == 0
        before = consumer.fetched.copy()
        await asyncio.sleep(1.2)
        main, idle = consumer.fetched[TP0] - before[TP0], consumer.fetched[tier1] - before[tier1]
        # A look every 0.3 s, each three or four fetches (two answers, then the turn that
        # takes what they brought); the other partition, every turn of the loop.
        assert 1 <= idle <= 20
        assert main >= 3 * idle
        # A record written to a resting partition is read at the next look.
        broker.append("tier", b"a retry", partition=1)
        assert await wait_until(lambda: (1, 0) in handler.tokens, within=1.5)
        handler.finish(1, 0)
        assert await wait_until(lambda: broker.commits.get(("group", tier1)) == 1, within=2)


class KeepingConsumer(LocalConsumer):
    """aiokafka's fetcher, closer than the local backend's: an answer's records are kept,
    a poll hands out at most `max_poll_records` of them, oldest answers first, and a
    partition whose records are kept is not fetched again until all are handed out. A
    newly assigned partition's first fetch waits for its committed offset (one poll)."""

    def __init__(self, broker: LocalBroker, group_id: str) -> None:
        super().__init__(broker, group_id, max_poll_records=500)
        self.kept: dict[TopicPartition, list[ConsumerRecord]] = {}
        self.unpositioned: set[TopicPartition] = set()

    async def _records(
        self, partitions: tuple[TopicPartition, ...], timeout_ms: int
    ) -> dict[TopicPartition, list[ConsumerRecord]]:
        out = self._hand_out(partitions)
        await asyncio.sleep(0.005)  # the fetch under way answers meanwhile
        self._answer()
        if not out:
            out = self._hand_out(partitions)
        if not out:
            await asyncio.sleep(min(timeout_ms, 5) / 1000)
        return out

    def _hand_out(self, partitions: tuple[TopicPartition, ...]) -> dict[
        TopicPartition, list[ConsumerRecord]
    ]:  # fmt: skip
        out: dict[TopicPartition, list[ConsumerRecord]] = {}
        budget = self._max
        for tp in list(self.kept):
            if budget <= 0 or tp in self.paused or (partitions and tp not in partitions):
                continue
            out[tp], rest = self.kept[tp][:budget], self.kept[tp][budget:]
            budget -= len(out[tp])
            if rest:
                self.kept[tp] = rest
            else:
                del self.kept[tp]
        return out

    def _answer(self) -> None:
        now_ms = int(time.time() * 1000)
        for tp, position in self._positions.items():
            if tp in self.paused or tp in self.kept:
                continue
            if tp in self.unpositioned:
                self.unpositioned.discard(tp)
                continue
            self.fetched[tp] += 1
            self._polled_ms[tp] = now_ms
            if batch := self._broker.topics[tp.topic][tp.partition][position : position + 1000]:
                self.kept[tp] = list(batch)
                self._positions[tp] = position + len(batch)


@dataclass
class TakingHandler(HoldingHandler):
    """Finishes every record at once, noting when the first of each topic came."""

    first: dict[str, float] = field(default_factory=dict)

    def submit(self, record: ConsumerRecord, token: Token) -> None:
        self.first.setdefault(record.topic, time.monotonic())
        token.done()


async def test_a_look_ends_only_once_what_its_answer_brought_is_taken() -> None:
    """A newly assigned tier partition whose first answer comes behind another partition's
    backlog: its records are taken before it rests, not at the next look."""
    broker = LocalBroker()
    broker.create_topic(TOPIC, partitions=1)
    broker.create_topic("tier", partitions=1)
    for i in range(2000):
        broker.append(TOPIC, b"backlog %d" % i, partition=0)
    broker.append("tier", b"left by the former owner", partition=0)
    consumer = KeepingConsumer(broker, "group")
    consumer.unpositioned.add(TopicPartition("tier", 0))
    handler = TakingHandler()
    loop = GroupLoop(
        lambda: consumer, handler, loop_settings(), topics=[TOPIC, "tier"], role="keeping",
        resting=Resting(["tier"], look_every=5.0, quiet_seconds=5.0),
    )  # fmt: skip
    await loop.start()
    started = time.monotonic()
    task = asyncio.create_task(loop.run())
    try:
        # Read within the first look, not at the next one 5 s later.
        assert await wait_until(lambda: "tier" in handler.first, within=3)
        assert handler.first["tier"] - started < 1.0
        assert TOPIC in handler.first
    finally:
        loop.stop()
        await asyncio.wait_for(task, 5)


class UnassignedConsumer(LocalConsumer):
    """aiokafka asserts that a partition whose last fetch answer is asked for is assigned."""

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        raise AssertionError("Partition is not assigned")


async def test_a_look_at_a_partition_the_consumer_no_longer_has_is_no_answer() -> None:
    broker = LocalBroker()
    broker.create_topic(TOPIC, partitions=1)
    broker.create_topic("tier", partitions=1)
    consumer = UnassignedConsumer(broker, "group")
    async with resting_loop(consumer, "unassigned", look_every=0.1, quiet_seconds=0.1) as (
        handler, loop, task,
    ):  # fmt: skip
        await asyncio.sleep(0.5)  # quiet, then a look that no answer ends
        broker.append(TOPIC, b"still delivered", partition=0)
        assert await wait_until(lambda: (0, 0) in handler.tokens, within=2)
        assert not task.done()
        assert loop.partitions_resting == frozenset()  # looking, so fetched, until answered


class LateCommittedConsumer(LocalConsumer):
    """aiokafka fetches a new partition's committed offset while the rebalance listener
    runs: its position is known only once `committed` is set."""

    def __init__(self, broker: LocalBroker, group_id: str) -> None:
        super().__init__(broker, group_id)
        self.broker = broker
        self.committed = asyncio.Event()

    async def position(self, partition: TopicPartition) -> int:
        await self.committed.wait()
        if partition not in self.assignment:
            raise IllegalStateError(f"{partition} is not assigned")  # as aiokafka says it
        return await super().position(partition)


@dataclass
class AssignedHandler(HoldingHandler):
    """Notes, as its partitions are assigned, whether the consumer knew their positions."""

    consumer: LateCommittedConsumer | None = None
    assigned_with_positions: list[bool] = field(default_factory=list)
    fail_assigned: bool = False

    def assigned(self, tps: Sequence[TopicPartition]) -> None:
        assert self.consumer is not None
        self.assigned_with_positions.append(self.consumer.committed.is_set())
        if self.fail_assigned:
            raise RuntimeError("a bug in assigned()")


@contextlib.asynccontextmanager
async def late_positions_loop() -> AsyncIterator[tuple[LateCommittedConsumer, AssignedHandler]]:
    """A running loop over one partition whose committed offset is read only once the test
    sets `consumer.committed`."""
    broker = LocalBroker()
    broker.create_topic(TOPIC, partitions=1)
    consumer = LateCommittedConsumer(broker, "group")
    handler = AssignedHandler(consumer=consumer)
    loop = GroupLoop(lambda: consumer, handler, loop_settings(), topics=[TOPIC], role="test")
    await loop.start()
    task = asyncio.create_task(loop.run())
    try:
        await asyncio.sleep(0.1)
        yield consumer, handler
    finally:
        loop.stop()
        await asyncio.wait_for(task, 5)


async def test_the_handler_hears_of_new_partitions_once_their_positions_are_known() -> None:
    async with late_positions_loop() as (consumer, handler):
        # The handler reads what it keeps about the partition only after the committed offset
        # is read: a previous owner still finishing commits after its writes, never before.
        assert handler.assigned_with_positions == []
        consumer.committed.set()
        assert await wait_until(lambda: handler.assigned_with_positions == [True], within=2)


async def test_partitions_revoked_before_their_positions_are_known_are_never_announced() -> None:
    async with late_positions_loop() as (consumer, handler):
        consumer.reassign([])  # revoked while aiokafka still reads its committed offset
        assert await wait_until(lambda: handler.revoked_calls == [[TP0]], within=2)
        consumer.committed.set()
        await asyncio.sleep(0.1)
        # Not this member's any more: its state must not be read (it would be kept, stale).
        assert handler.assigned_with_positions == []


async def test_a_handler_error_on_assignment_is_counted_and_the_loop_goes_on() -> None:
    before = metrics.HANDLER_ERRORS.labels("test")._value.get()
    async with late_positions_loop() as (consumer, handler):
        handler.fail_assigned = True
        consumer.committed.set()
        # Raised in the task that waits for the positions: said there, not lost in it.
        assert await wait_until(
            lambda: metrics.HANDLER_ERRORS.labels("test")._value.get() == before + 1, within=2
        )
        consumer.broker.append(TOPIC, b"still read", partition=0)
        assert await wait_until(lambda: (0, 0) in handler.tokens, within=2)
