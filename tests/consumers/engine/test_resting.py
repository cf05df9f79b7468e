"""Which idle partitions rest, when they are looked at, and which topics may rest at all."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka import TopicPartition

from consumers.engine.resting import LOOK_EVERY, Resting, look_within, may_rest
from service.retries.policy import DEFAULT_SCHEDULE, RetrySchedule

TIER, MAIN = TopicPartition("retry.300s", 0), TopicPartition("deliveries", 0)


class Clocks:
    """The monotonic clock, and a consumer whose fetch answers the test stamps."""

    def __init__(self) -> None:
        self.now = 100.0
        self.wall_ms = 1_000_000
        self.answered: dict[TopicPartition, int] = {}

    def tick(self, seconds: float) -> None:
        self.now += seconds
        self.wall_ms += int(seconds * 1000)

    def answer(self, tp: TopicPartition) -> None:
        """A fetch answered for the partition, now."""
        self.answered[tp] = self.wall_ms

    def last_poll_timestamp(self, partition: TopicPartition) -> int | None:
        return self.answered.get(partition)


def turn(
    r: Resting, clocks: Clocks, waiting: Callable[[TopicPartition], bool] = lambda _: False
) -> frozenset[TopicPartition]:
    """One turn of the loop: the partitions that rest."""
    return r.resting(clocks.last_poll_timestamp, waiting)


def resting(
    clocks: Clocks, busy: frozenset[TopicPartition] = frozenset()
) -> tuple[Resting, frozenset[TopicPartition]]:
    r = Resting(["retry.300s"], clock=lambda: clocks.now, wall_ms=lambda: clocks.wall_ms)
    r.assigned([TIER, MAIN])
    return r, r.resting(clocks.last_poll_timestamp, busy.__contains__)


def answered_twice(r: Resting, clocks: Clocks) -> None:
    """Two fetches answer for the tier partition, each seen by a turn of the loop."""
    for _ in range(2):
        clocks.tick(0.02)
        clocks.answer(TIER)
        assert turn(r, clocks) == set()


def quiet_then_looked_at(r: Resting, clocks: Clocks) -> frozenset[TopicPartition]:
    """Past the quiet time: a look starts (or goes on), two fetches answer, the loop turns
    once more."""
    clocks.tick(5.1)
    assert turn(r, clocks) == set()  # looking
    answered_twice(r, clocks)  # the second answer: what the first brought was taken
    return turn(r, clocks)


def test_a_newly_assigned_partition_rests_after_one_look_without_a_quiet_time() -> None:
    clocks = Clocks()
    r, first = resting(clocks)
    assert first == set()  # just assigned: looked at, read from its committed offset
    for _ in range(3):  # no fetch has answered for it yet (its position is being found)
        clocks.tick(2.0)
        assert turn(r, clocks) == set()
    answered_twice(r, clocks)
    assert turn(r, clocks) == {TIER}


def test_a_look_goes_on_while_what_its_first_answer_brought_waits_in_the_consumer() -> None:
    clocks = Clocks()
    r, _ = resting(clocks)
    clocks.tick(0.02)
    clocks.answer(TIER)  # records the consumer keeps behind another partition's, not taken
    # The consumer fetches the partition again only once they are taken: no second answer.
    for _ in range(10):
        clocks.tick(1.0)
        assert turn(r, clocks) == set()
    r.took(TIER)  # taken: busy, so fetched for its quiet time
    clocks.tick(4.0)
    assert turn(r, clocks) == set()
    assert quiet_then_looked_at(r, clocks) == {TIER}


def test_a_newly_assigned_partition_whose_look_brings_records_is_fetched_for_its_quiet_time() -> (
    None
):
    clocks = Clocks()
    r, _ = resting(clocks)
    clocks.tick(0.05)
    clocks.answer(TIER)
    turn(r, clocks)
    r.took(TIER)  # the backlog left by the partition's former owner
    for _ in range(4):
        clocks.tick(1.0)
        assert turn(r, clocks) == set()
    assert quiet_then_looked_at(r, clocks) == {TIER}


def test_an_answer_from_before_the_look_does_not_end_it() -> None:
    clocks = Clocks()
    r, _ = resting(clocks)
    clocks.answer(TIER)  # a fetch that was under way when the look began
    clocks.tick(5.1)
    for _ in range(5):
        assert turn(r, clocks) == set()


def test_a_resting_partition_is_looked_at_every_few_seconds() -> None:
    clocks = Clocks()
    r, _ = resting(clocks)
    assert quiet_then_looked_at(r, clocks) == {TIER}
    clocks.tick(LOOK_EVERY - 0.1)
    assert turn(r, clocks) == {TIER}
    clocks.tick(0.2)
    assert turn(r, clocks) == set()  # the next look
    clocks.tick(0.5)
    assert turn(r, clocks) == set()  # no answer yet: still looking
    clocks.answer(TIER)
    assert turn(r, clocks) == set()  # one answer: still looking
    clocks.tick(0.02)
    clocks.answer(TIER)
    turn(r, clocks)
    assert turn(r, clocks) == {TIER}


def test_records_taken_keep_a_partition_fetched_and_waiting_ones_are_not_looked_for() -> None:
    clocks = Clocks()
    r, _ = resting(clocks)
    assert quiet_then_looked_at(r, clocks) == {TIER}
    clocks.tick(LOOK_EVERY)
    turn(r, clocks)
    r.took(TIER)  # the look brought records
    for _ in range(4):
        clocks.tick(1.0)
        assert turn(r, clocks) == set()
    # Its records wait for their due time (the loop pauses it for them): no look starts,
    # since no fetch of a paused partition could end it, however long they wait.
    for _ in range(10):
        clocks.tick(1.0)
        assert turn(r, clocks, TIER.__eq__) == {TIER}
    # Taken when due: fetched again for the quiet time, then looked at and resting.
    r.took(TIER)
    assert turn(r, clocks) == set()
    assert quiet_then_looked_at(r, clocks) == {TIER}


def test_other_topics_never_rest_and_revoked_partitions_are_forgotten() -> None:
    clocks = Clocks()
    r, _ = resting(clocks)
    assert MAIN not in quiet_then_looked_at(r, clocks)
    r.revoked([TIER])
    clocks.tick(60)
    assert turn(r, clocks) == set()
    r.took(TIER)  # a record of a partition no longer ours changes nothing
    assert turn(r, clocks) == set()


def test_only_tiers_whose_records_cannot_be_due_before_the_next_look_rest() -> None:
    schedule = RetrySchedule(DEFAULT_SCHEDULE, topic_prefix="switchboard.retry")
    earliest = {t: schedule.earliest_due(t) for t in schedule.tiers}
    assert earliest[0.0] == 0.0
    assert earliest[5.0] == 0.0  # after the immediate tier: due at once at the soonest
    assert earliest[300.0] == 6.0  # 5 s and up to 20% more go to the 5 s tier
    # With the production fetch wait (500 ms) a look takes at most 3.9 s.
    assert look_within(500, 200) == 3.9
    rests = [t for t in schedule.tiers if may_rest(earliest[t], 500, 200)]
    assert rests == [300.0, 1800.0, 7200.0, 18000.0, 36000.0]
    # A fetch wait of 5 s (a broker that holds fetches long): none may rest but the longest.
    assert [t for t in schedule.tiers if may_rest(earliest[t], 5000, 200)] == rests[1:]
    # Every wait the schedule gives lands in a tier it is not shorter than the earliest of.
    for failed in range(1, len(DEFAULT_SCHEDULE) + 1):
        for wait in (0.8 * schedule.nominal_wait(failed), 1.2 * schedule.nominal_wait(failed)):
            assert wait >= earliest[schedule.tier_for(wait)]
