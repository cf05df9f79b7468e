"""Ordered delivery per key: one delivery of a key at a time, in source order.

Every delivery to a subscription is in one partition of the deliveries topic (keyed by its
id), and first attempts are in source order there. For an ordered subscription the owner of
that partition runs a key's deliveries one after the other (`_Lane`): one job at a time; the
deliveries that arrive meanwhile wait in memory, uncommitted, which is safe, since after a
crash they are read again in the same order.

A delivery that fails goes to a retry tier as any other, and its key now waits for it (its
state's `blocker`). The key's later deliveries cannot wait in memory, since that could be
days and would hold their partition's commit: each is held in the ordering topic
(service/ordering/keys.py) and its source record committed. Other keys and other
subscriptions go on. When the blocker is delivered, or becomes a dead letter and the
subscription says `continue`, the held deliveries are taken up again, in order, one at a
time; with `hold`, the key stops until an operator releases it (a control record on the
deliveries topic, so that the owner applies it in order).

Every change of a key is written to the ordering topic, and acknowledged, before the
delivery's source record is finished and before the key's next delivery starts. The changes
of a partition's keys are written together, a batch at a time, by one task (`_settle`): a
key is in one batch at most, since its next change waits for the last. A new owner reads
the partition of the ordering topic before it delivers anything ordered there, so it knows
which keys wait, and what they hold, and does not deliver a later delivery of a waiting key
first. A delivery read again whose offset the key has already taken (run, or held) is
skipped.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, Final, NamedTuple, Protocol

import msgspec
import structlog
from aiokafka import ConsumerRecord, TopicPartition
from aiokafka.errors import MessageSizeTooLargeError

from consumers.deliveries.partition_state import RETRY_SECONDS, PartitionStates
from consumers.engine.contract import Producer, Rejected, Token
from consumers.engine.produce import Write, produce, produce_many
from consumers.engine.tasks import finish_when_done
from service.delivery.job import DeliveryJob, Ending
from service.delivery.record import DeliveryRecord, decode
from service.events.envelope import Event
from service.observability import metrics
from service.ordering.keys import (
    RECENT_EVENTS,
    Copy,
    KeyId,
    KeyState,
    PartitionKeys,
    encode_held,
    encode_state,
    held_key,
    state_key,
)
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.ordering")

ROLE: Final = "ordering"
# Idle keys are looked for at most this often (the sweep walks every key of the partition).
_SWEEP_INTERVAL: Final = 60.0
# A held copy not found is read again after these waits, its key waiting meanwhile, before it
# is taken as gone. Its write was acknowledged, so it is there: a broker may show it a moment
# late (the test broker, until the partition's next write: consumers/deliveries/
# partition_reader.py). Passed over, the copy would stay, and the partition's next owner
# would deliver it after the key's later events.
_HELD_READ_AGAIN: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)


# Makes the job for a delivery (its `on_done` called once it finishes) and queues it for its
# attempt; the token is the source record's, None for a delivery taken from the held ones.
class StartJob(Protocol):
    def __call__(
        self, tp: TopicPartition, offset: int, delivery: DeliveryRecord, token: Token | None,
        on_done: Callable[[DeliveryJob], None], *, sequence: int | None,
        event: Event | None = None,
    ) -> DeliveryJob: ...  # fmt: skip


LoadPartition = Callable[[int], Coroutine[Any, Any, PartitionKeys]]
# Reads given records of a partition of the ordering topic by offset.
ReadAt = Callable[[int, list[int]], Awaitable[list[ConsumerRecord]]]


class _Lane:
    """A key's deliveries in this process: the one running (or being read back from its held
    copy), and those waiting behind it."""

    __slots__ = ("fetching", "running", "waiting")

    def __init__(self) -> None:
        self.running: DeliveryJob | None = None
        self.fetching = False
        # (offset, delivery, token, its event as built to read its key)
        self.waiting: deque[tuple[int, DeliveryRecord, Token, Event]] = deque()

    @property
    def busy(self) -> bool:
        return self.running is not None or self.fetching


class _Ending(NamedTuple):
    """A job's ending, to make durable before its key goes on."""

    tp: TopicPartition
    part: PartitionKeys
    lanes: dict[KeyId, _Lane]
    kid: KeyId
    job: DeliveryJob
    state: KeyState  # the key's, once the job has ended
    released: int | None  # the held delivery the job took up: its copy is deleted with it
    token: Token | None


class _Writer:
    """A partition's endings: the batch being written, those for the next, and the one task
    that writes them."""

    __slots__ = ("batch", "endings", "task")

    def __init__(self) -> None:
        self.batch: list[_Ending] = []
        self.endings: list[_Ending] = []
        self.task: asyncio.Task[None]


class OrderedDeliveries:
    def __init__(
        self,
        *,
        producer: Producer,
        topic: str,
        deliveries_topic: str,
        start: StartJob,
        load: LoadPartition,
        read_at: ReadAt,
        find: Callable[[str], Subscription | None],
        idle_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._producer = producer
        self._read_at = read_at
        self._find = find
        self._topic = topic
        self._deliveries_topic = deliveries_topic
        self._start = start
        self._idle = idle_seconds
        self._clock = clock
        self._states = PartitionStates(load, "ordering_keys", clock)
        self._lanes: dict[int, dict[KeyId, _Lane]] = {}
        # Work that is no source record's (held deliveries taken up, their settling, sweeps):
        # cancelled when their partition is revoked.
        self._own: dict[int, set[asyncio.Future[object] | DeliveryJob]] = {}
        self._swept_at = clock()
        # Partitions whose keys, as read, have been looked at for held deliveries to go on.
        self._resumed: set[int] = set()
        # Per partition: the endings of its keys' jobs being made durable.
        self._writers: dict[int, _Writer] = {}

    # Called by the delivery handler

    def submit(
        self, tp: TopicPartition, record: ConsumerRecord, token: Token, delivery: DeliveryRecord,
        *, key: tuple[Subscription, str], event: Event,
    ) -> None:  # fmt: skip
        """Take a delivery of an ordered subscription's key (`event`, the delivery's, as built
        to read the key: built once); raises Rejected while the partition's keys are read."""
        part = self._states.get(tp.partition)
        kid = (key[0].id, key[1])
        state = part.states.get(kid)
        lane = self._lanes.setdefault(tp.partition, {}).get(kid)
        running = lane is not None and lane.busy
        if tp.topic != self._deliveries_topic:
            if (
                lane is not None
                and lane.running is not None
                and (lane.running.event.id == delivery.event.id)
            ):
                # The retry of a job whose ending is still being made durable: once it is,
                # the key waits for this very retry. Until then it would look like a repeat.
                raise Rejected(retry_at=self._clock() + RETRY_SECONDS)
            if state is not None and state.blocker == delivery.event.id and not running:
                self._run(tp, kid, delivery, token, source=record.offset, first=None, event=event)
            else:
                # A repeat (a retry record written twice), a replayed dead letter, or a retry
                # from before the subscription was ordered: delivered as it comes, leaving
                # the key as it is.
                self._start(tp, record.offset, delivery, token, lambda _: token.done(),
                            sequence=delivery.sequence, event=event)  # fmt: skip
            return
        offset = record.offset
        if (state is not None and (offset <= state.offset or state.taken(delivery.event.id))) or (
            part.is_held(kid, offset)
        ):
            # Taken before a crash or rebalance (delivered, retrying or held), or an event
            # handed off again after a crash of the events stage
            token.done()
        elif (state is not None and state.waiting) or kid in part.held:
            self._hold(tp, kid, [(offset, delivery, token)])
        elif lane is not None and running:
            lane.waiting.append((offset, delivery, token, event))
        else:
            self._run(tp, kid, delivery, token, source=offset, first=offset, event=event)

    async def close(self) -> None:
        await self._states.close()

    def load(self, partition: int) -> None:
        """Read the partition's keys now (it was assigned here): `poll` then takes up the
        held deliveries its previous owner had begun to deliver."""
        self._states.load(partition)

    def release(self, tp: TopicPartition, kid: KeyId, token: Token) -> None:
        """An operator's release of a stopped key (a control record in the partition)."""
        part = self._states.get(tp.partition)
        state = part.states.get(kid)
        if state is None or not state.stopped:
            token.done()
            return
        released = msgspec.structs.replace(state, stopped=False, touched=self._clock())
        log.info("ordering_key_released", subscription_id=kid[0], held=len(part.held.get(kid, ())))
        finish_when_done(token, self._go_on(tp.partition, part, kid, released), ROLE)

    def poll(self) -> None:
        for p, part in self._states.items():
            if p not in self._resumed:
                self._resumed.add(p)
                self._resume(p, part)
        now = self._clock()
        if now - self._swept_at >= _SWEEP_INTERVAL:
            self._swept_at = now
            for p, part in self._states.items():
                self._sweep(p, part, now)
                self._unorder(p, part)
        parts = [part for _, part in self._states.items()]
        metrics.ORDERING_HELD.set(sum(p.held_count() for p in parts))
        waiting = [p.states[k] for p in parts for k in p.waiting]
        blocked = sum(1 for s in waiting if s.blocker)
        stopped = sum(1 for s in waiting if s.stopped)
        metrics.ORDERING_KEYS_WAITING.labels("retrying").set(blocked)
        metrics.ORDERING_KEYS_WAITING.labels("stopped").set(stopped)

    def revoked(self, tps: Sequence[TopicPartition]) -> None:
        """Forget revoked partitions: their next owner reads their keys again. Deliveries
        waiting behind their key's running one are given up. Held deliveries taken up are
        cancelled, even mid-request (their held records stay, for the
        next owner to deliver again): no source record waits for them, so the loop's grace
        period would not, and an ending made durable after the next owner has read the keys
        would be lost on it."""
        for p in {tp.partition for tp in tps if tp.topic == self._deliveries_topic}:
            self._states.forget(p)
            self._resumed.discard(p)
            for lane in self._lanes.pop(p, {}).values():
                # Read, and nothing begun: given up at once, for the next owner to read
                # again. Nothing finishes them any more: left open, they held every revoke
                # for the whole grace period, longer than a group may wait for the member to
                # rejoin, and the next owner then read the keys while this one still ended
                # jobs and wrote their endings.
                for _, _, token, _ in lane.waiting:
                    token.abandon()
                lane.waiting.clear()
            for work in self._own.pop(p, set()):
                work.cancel()
            writer = self._writers.pop(p, None)
            if writer is not None:
                writer.task.cancel()
                # Endings not acknowledged yet: their records are read again by the next
                # owner (one whose write lands anyway is skipped there, as taken), and given
                # up now so that the grace period does not wait for them.
                for ending in (*writer.batch, *writer.endings):
                    if ending.token is not None:
                        ending.token.abandon()

    # A key's deliveries

    def _states_of(self, partition: int) -> PartitionKeys:
        part = self._states.peek(partition)
        assert part is not None, "only called for a partition whose keys were read"
        return part

    def _run(
        self, tp: TopicPartition, kid: KeyId, delivery: DeliveryRecord, token: Token | None,
        *, source: int, first: int | None, held: bool = False, event: Event | None = None,
    ) -> None:  # fmt: skip
        """Start the key's next delivery: a first attempt (`first` is its deliveries-topic
        offset), a held one taken up (`held`, `first` its offset), or the blocker's retry
        (neither). `source` is the offset of the token's record, -1 without one."""
        part = self._states_of(tp.partition)
        lanes = self._lanes[tp.partition]
        state = part.states.get(kid) or KeyState()
        sequence = delivery.sequence if first is None and delivery.sequence else state.seq + 1

        def ended(job: DeliveryJob) -> None:
            # The partition's keys as they are now: a revoke during the loop's grace period
            # forgets them, but the jobs it waits for still make their endings durable.
            new = self._after(part.states.get(kid) or KeyState(), kid, job, first)
            self._settle(_Ending(tp, part, lanes, kid, job, new, first if held else None, token))

        job = self._start(tp, source, delivery, token, ended, sequence=sequence, event=event)
        lane = lanes.get(kid)
        if lane is None:
            lane = lanes[kid] = _Lane()
        lane.running = job
        if token is None:
            self._own.setdefault(tp.partition, set()).add(job)

    def _after(self, state: KeyState, kid: KeyId, job: DeliveryJob, first: int | None) -> KeyState:
        """The key's state once the job has ended."""
        stopped = state.stopped
        if job.ending is Ending.DEAD_LETTERED and _holds_after_dead_letter(job.sub):
            stopped = True
            log.warning("ordering_key_stopped", subscription_id=kid[0], event_id=job.event.id)
        recent = state.recent
        if first is not None and job.event.id not in recent:
            recent = (*recent, job.event.id)[-RECENT_EVENTS:]
        return KeyState(
            seq=state.seq if job.sequence is None else max(job.sequence, state.seq),
            offset=state.offset if first is None else max(first, state.offset),
            recent=recent,
            blocker=job.event.id if job.ending is Ending.RETRYING else None,
            stopped=stopped,
            touched=self._clock(),
        )

    def _settle(self, ending: _Ending) -> None:
        """Make what the job's ending means for its key durable, with the partition's other
        endings: its key goes on, and its source record is finished, once acknowledged."""
        partition = ending.tp.partition
        writer = self._writers.get(partition)
        if writer is None or writer.task.done():  # done: cancelled with a record abandoned
            writer = self._writers[partition] = _Writer()
            writer.task = asyncio.create_task(self._write_endings(partition, writer))
            writer.task.add_done_callback(_log_failure)
        writer.endings.append(ending)
        if ending.token is not None:
            # Cancelled, and waited for, if the record is abandoned (the end of a revoke's
            # grace period): nothing of the partition is written once it changes hands.
            ending.token.attach(writer.task)

    async def _write_endings(self, partition: int, writer: _Writer) -> None:
        """Write the partition's endings a batch at a time, in one task: those that come
        while a batch is written go in the next. No await between the last look at
        `endings` and leaving `_writers`: an ending never waits for a writer that is gone."""
        while writer.endings:
            writer.batch, writer.endings = writer.endings, []
            await self._write_states(partition, writer.batch)
            for ending in writer.batch:
                self._went_on(ending)
        writer.batch = []
        if self._writers.get(partition) is writer:
            del self._writers[partition]

    async def _write_states(self, partition: int, batch: list[_Ending]) -> None:
        """Write the batch's states, and the tombstones of the held copies they took up;
        a failure is said, never raised, so that the keys go on."""
        writes = []
        for e in batch:
            writes.append(Write(encode_state(e.state), state_key(e.kid), None, partition))
            if e.released is not None:  # acknowledged with the state that took it up
                writes.append(Write(None, held_key(e.kid, e.released), None, partition))
        try:
            results = await produce_many(self._producer, self._topic, ROLE, writes)
        except Exception:  # a bug of ours (Kafka errors are retried): said, and the keys go
            # on anyway, as finish_when_done would, or the partition stalls
            log.exception("ordering_write_failed", records=len(writes))
            metrics.HANDLER_ERRORS.labels(ROLE).inc()
            return
        for md in results:
            if isinstance(md, MessageSizeTooLargeError):  # a few bytes: a bug of ours
                log.error("ordering_write_failed", error=repr(md))
                metrics.HANDLER_ERRORS.labels(ROLE).inc()

    def _went_on(self, ending: _Ending) -> None:
        """The key's ending is durable: the key goes on, and the source record is done."""
        tp, part, kid = ending.tp, ending.part, ending.kid
        try:
            part.put(kid, ending.state)
            if ending.released is not None:
                part.release(kid, ending.released)
            ending.lanes[kid].running = None
            if ending.token is None:
                self._own.get(tp.partition, set()).discard(ending.job)
            if self._states.peek(tp.partition) is part:  # not revoked meanwhile
                self._next(tp, kid)
        except Exception:  # a bug of ours: the record is finished anyway, as
            # finish_when_done does, or its partition stalls
            log.exception("ordering_settle_failed", subscription_id=kid[0])
            metrics.HANDLER_ERRORS.labels(ROLE).inc()
        if ending.token is not None:
            ending.token.done()

    def _next(self, tp: TopicPartition, kid: KeyId) -> None:
        part = self._states_of(tp.partition)
        lanes = self._lanes[tp.partition]
        lane = lanes.get(kid)
        if lane is None:
            lane = lanes[kid] = _Lane()
        state = part.states.get(kid)
        if lane.waiting and ((state is not None and state.waiting) or kid in part.held):
            # Behind a waiting key, or behind held deliveries: held too, after them.
            waiting = [(offset, delivery, token) for offset, delivery, token, _ in lane.waiting]
            lane.waiting.clear()
            self._hold(tp, kid, waiting)
        if state is not None and state.waiting:
            del lanes[kid]
            return
        queue = part.held.get(kid)
        if queue:
            offset, copy = next(iter(queue.items()))
            lane.fetching = True
            self._own_task(tp.partition, self._take_held(tp, part, lanes, kid, (offset, copy)))
        elif (taking := self._next_waiting(lane, state)) is not None:
            offset, delivery, token, event = taking
            self._run(tp, kid, delivery, token, source=offset, first=offset, event=event)
        else:
            del lanes[kid]

    @staticmethod
    def _next_waiting(
        lane: _Lane, state: KeyState | None
    ) -> tuple[int, DeliveryRecord, Token, Event] | None:
        """The lane's next delivery in memory; a repeat of an event the key has taken since
        it was queued (handed off twice) is finished without a delivery."""
        while lane.waiting:
            waiting = lane.waiting.popleft()
            if state is not None and state.taken(waiting[1].event.id):
                waiting[2].done()
                continue
            return waiting
        return None

    async def _take_held(
        self, tp: TopicPartition, part: PartitionKeys, lanes: dict[KeyId, _Lane], kid: KeyId,
        held: tuple[int, Copy],
    ) -> None:  # fmt: skip
        """Read the key's next held delivery back from its copy, and run it."""
        offset, copy = held
        at = copy if isinstance(copy, int) else await copy
        records = await self._read_at(tp.partition, [at])
        for wait in _HELD_READ_AGAIN:
            if records or self._states.peek(tp.partition) is not part:
                break
            log.warning("ordering_held_copy_not_found", subscription_id=kid[0], offset=offset,
                        at=at, again_in=wait)  # fmt: skip
            await asyncio.sleep(wait)
            records = await self._read_at(tp.partition, [at])
        lane = lanes.get(kid)
        if lane is not None:
            lane.fetching = False
        if self._states.peek(tp.partition) is not part or lane is None:
            return  # revoked meanwhile: the next owner reads the copy again
        try:
            delivery = decode(records[0].value) if records else None
        except (msgspec.DecodeError, msgspec.ValidationError):
            delivery = None
        if delivery is None:
            # Only this service writes the topic: a copy still not found after a minute, or
            # unreadable, is a bug. Said, and passed over, so that the key is not stuck for
            # good behind it.
            log.error("ordering_held_copy_unreadable", subscription_id=kid[0], offset=offset,
                      at=at)  # fmt: skip
            part.release(kid, offset)
            self._next(tp, kid)
            return
        state = part.states.get(kid)
        if state is not None and state.taken(delivery.event.id):
            # Held twice (handed off again while the key waited): its copy goes, unsent.
            lane.fetching = True
            await self._write(tp.partition, held_key(kid, offset), None)
            lane.fetching = False
            if self._states.peek(tp.partition) is part:
                part.release(kid, offset)
                self._next(tp, kid)
            return
        self._run(tp, kid, delivery, None, source=-1, first=offset, held=True)

    def _hold(
        self, tp: TopicPartition, kid: KeyId, deliveries: list[tuple[int, DeliveryRecord, Token]]
    ) -> None:
        """Hold deliveries of the key in the ordering topic; each source record is finished
        once its copy is acknowledged. In memory at once (where its copy will be), so that a
        later arrival of the key is held after them."""
        part = self._states_of(tp.partition)
        loop = asyncio.get_running_loop()
        for offset, delivery, token in deliveries:
            copy: asyncio.Future[int] = loop.create_future()
            part.hold(kid, offset, copy)
            finish_when_done(token, self._copy(tp.partition, part, kid, (offset, copy), delivery),
                             ROLE)  # fmt: skip

    async def _copy(
        self, partition: int, part: PartitionKeys, kid: KeyId,
        held: tuple[int, asyncio.Future[int]], delivery: DeliveryRecord,
    ) -> None:  # fmt: skip
        offset, copy = held
        at = await self._write(partition, held_key(kid, offset), encode_held(delivery))
        copy.set_result(at)
        if part.held.get(kid, {}).get(offset) is copy:
            part.held[kid][offset] = at

    def _sweep(self, partition: int, part: PartitionKeys, now: float) -> None:
        """Forget keys idle for longer than `idle_seconds`: a key seen again after that
        starts its sequence at 1 again (docs/ordering.md)."""
        lanes = self._lanes.get(partition, {})
        idle = [
            kid
            for kid, state in part.states.items()
            if not state.waiting
            and kid not in part.held
            and kid not in lanes
            and now - state.touched > self._idle
        ]
        for kid in idle:
            part.forget(kid)
            self._own_task(partition, self._write(partition, state_key(kid), None))

    def _resume(self, partition: int, part: PartitionKeys) -> None:
        """Keys read with held deliveries and nothing to wait for: the previous owner had
        begun to take them up when it stopped. They go on here."""
        tp = TopicPartition(self._deliveries_topic, partition)
        lanes = self._lanes.setdefault(partition, {})
        for kid in list(part.held):
            state = part.states.get(kid)
            if not (kid in lanes and lanes[kid].busy) and (state is None or not state.waiting):
                self._next(tp, kid)

    def _unorder(self, partition: int, part: PartitionKeys) -> None:
        """Waiting keys of subscriptions that are no longer ordered (or deleted): nothing
        would ever take their held deliveries up, so they go on now, in order (a deleted
        subscription's become dead letters)."""
        lanes = self._lanes.get(partition, {})
        for kid in list(part.waiting):
            state = part.states[kid]
            sub = self._find(kid[0])
            if sub is not None and sub.ordering is not None:
                continue
            if kid in lanes and lanes[kid].busy:
                continue
            moving = msgspec.structs.replace(state, blocker=None, stopped=False)
            log.info("ordering_key_unordered", subscription_id=kid[0],
                     held=len(part.held.get(kid, ())))  # fmt: skip
            self._own_task(partition, self._go_on(partition, part, kid, moving))

    async def _go_on(
        self, partition: int, part: PartitionKeys, kid: KeyId, state: KeyState
    ) -> None:
        await self._write(partition, state_key(kid), encode_state(state))
        part.put(kid, state)
        lane = self._lanes.get(partition, {}).get(kid)
        if self._states.peek(partition) is part and (lane is None or not lane.busy):
            self._next(TopicPartition(self._deliveries_topic, partition), kid)

    async def _write(self, partition: int, key: bytes, value: bytes | None) -> int:
        """Write one record of the key's state; its offset once acknowledged."""
        md = await produce(
            self._producer, self._topic, ROLE, key=key, value=value, partition=partition
        )
        return int(md.offset)

    def _own_task(self, partition: int, work: Awaitable[object]) -> None:
        task = asyncio.ensure_future(work)
        own = self._own.setdefault(partition, set())
        own.add(task)
        task.add_done_callback(own.discard)
        task.add_done_callback(_log_failure)


def _holds_after_dead_letter(sub: Subscription | None) -> bool:
    return sub is not None and sub.ordering is not None and sub.ordering.after_dead_letter == "hold"


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("ordering_write_failed", error=repr(task.exception()))
