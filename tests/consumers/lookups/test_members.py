"""The lookup members topic folded: who is live, whether the view is settled, positions."""

from __future__ import annotations

import pytest
from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from consumers.engine.offsets import PartitionOffsets
from consumers.lookups.members import (
    ENCODER,
    Heartbeat,
    Membership,
    Position,
    UnreadableRecord,
    member_key,
    position_key,
)
from consumers.lookups.positions import AnsweredThrough

TIMEOUT = 3.0
TP = TopicPartition("calls.lookups", 7)


def beat(member: str, topics: tuple[str, ...] = ("calls.lookups",)) -> tuple[bytes, bytes]:
    return member_key(member), ENCODER.encode(Heartbeat(member, topics))


def test_a_member_is_live_until_the_timeout_after_its_last_heartbeat_read() -> None:
    m = Membership(TIMEOUT)
    m.fold(*beat("a"), now=100.0)
    m.fold(*beat("b"), now=101.0)
    assert m.live(102.9) == {"a", "b"}
    assert m.live(103.0) == {"b"}  # a's heartbeat is 3 s old here, whatever its timestamp
    m.fold(*beat("a"), now=103.5)
    assert m.live(103.5) == {"a", "b"}


def test_a_tombstone_takes_a_member_out_at_once() -> None:
    m = Membership(TIMEOUT)
    m.fold(*beat("a"), now=100.0)
    m.fold(member_key("a"), None, now=100.1)
    assert m.live(100.1) == frozenset()


def test_a_partition_is_shared_only_among_the_members_that_read_its_topic() -> None:
    m = Membership(TIMEOUT)
    m.fold(*beat("a", ("calls.lookups", "sms.lookups")), now=1.0)
    m.fold(*beat("b", ("calls.lookups",)), now=1.0)
    m.fold(*beat("c", ()), now=1.0)  # a replica rolling out without LOOKUP_TOPICS
    assert m.readers(1.0) == {"calls.lookups": {"a", "b"}, "sms.lookups": {"a"}}
    m.fold(member_key("a"), None, now=1.5)
    assert m.readers(1.5) == {"calls.lookups": {"b"}}


def test_the_last_reported_position_wins() -> None:
    m = Membership(TIMEOUT)
    assert m.position(TP) is None
    m.fold(position_key(TP), ENCODER.encode(Position(40, "a")), now=1.0)
    m.fold(position_key(TP), ENCODER.encode(Position(35, "b")), now=2.0)
    assert m.position(TP) == 35
    assert m.position(TopicPartition("calls.lookups", 8)) is None


@pytest.mark.parametrize(
    ("key", "value", "reason"),
    [
        (b"member:a", b"not json", "heartbeat"),
        (b"member:a", ENCODER.encode(Heartbeat("b", ())), "another member"),
        (b"member:", ENCODER.encode(Heartbeat("", ())), "without an id"),
        (b"position:calls.lookups", ENCODER.encode(Position(1, "a")), "<topic>:<partition>"),
        (b"position:calls.lookups:x", ENCODER.encode(Position(1, "a")), "<topic>:<partition>"),
        (b"position:calls.lookups:1", b'{"offset": -1, "member": "a"}', "negative"),
        (b"position:calls.lookups:1", b'{"offset": "1"}', "position"),
        (b"\xff", b"{}", "UTF-8"),
        (None, b"{}", "unknown key"),
        (b"leader", b"{}", "unknown key"),
    ],
)
def test_an_unreadable_record_says_why_and_changes_nothing(
    key: bytes | None, value: bytes, reason: str
) -> None:
    m = Membership(TIMEOUT)
    m.fold(*beat("a"), now=1.0)
    with pytest.raises(UnreadableRecord, match=reason):
        m.fold(key, value, now=1.5)
    assert m.live(1.5) == {"a"}
    assert m.position(TopicPartition("calls.lookups", 1)) is None


def test_the_view_settles_once_every_member_loaded_is_heard_from_again() -> None:
    m = Membership(TIMEOUT)
    # The initial load: every record arrives at once, a crashed member's among them.
    m.fold(*beat("alive"), now=10.0)
    m.fold(*beat("crashed-long-ago"), now=10.0)
    assert not m.settled(10.0)
    m.mark_loaded(10.0)
    m.fold(*beat("alive"), now=10.8)
    assert not m.settled(10.8)  # the crashed one might still be heard from
    assert m.settled(13.0)  # it was not, for a whole timeout: it is gone
    assert m.live(13.0) == {"alive"}


def test_the_view_settles_early_when_every_loaded_member_heartbeats() -> None:
    m = Membership(TIMEOUT)
    m.fold(*beat("a"), now=10.0)
    m.mark_loaded(10.0)
    m.fold(*beat("a"), now=10.9)
    assert m.settled(10.9)
    empty = Membership(TIMEOUT)
    assert not empty.settled(0.0)  # not loaded yet
    empty.mark_loaded(0.0)
    assert empty.settled(0.0)


def test_long_silent_members_can_be_forgotten() -> None:
    m = Membership(TIMEOUT)
    m.fold(*beat("a"), now=0.0)
    m.fold(*beat("b"), now=25.0)
    assert m.silent_for(30.0, 30.0) == ["a"]
    m.forget("a")
    assert m.silent_for(60.0, 30.0) == ["b"]


events_st = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.booleans(), st.floats(0, 2)), max_size=40
)


@given(events_st, st.floats(0, 5))
def test_live_is_who_heartbeat_last_within_the_timeout(
    events: list[tuple[str, bool, float]], later: float
) -> None:
    m = Membership(TIMEOUT)
    now = 0.0
    last: dict[str, float | None] = {}
    for member, leaves, step in events:
        now += step
        if leaves:
            m.fold(member_key(member), None, now)
            last[member] = None
        else:
            m.fold(*beat(member), now)
            last[member] = now
    at = now + later
    expected = {x for x, t in last.items() if t is not None and at - t < TIMEOUT}
    assert m.live(at) == expected


@given(st.data())
def test_the_reported_position_never_passes_an_unanswered_request(data: st.DataObject) -> None:
    """The loop's commits, as this member reports them: every request below the reported
    position is answered, whatever the order the answers finish in, and whatever was taken
    over from (a new owner starts there, so nothing below it is skipped)."""
    start = data.draw(st.integers(0, 1000))
    offsets = sorted(data.draw(st.sets(st.integers(start, start + 80), max_size=40)))
    answered = AnsweredThrough()
    answered.take(TP, start)
    assert answered.unwritten() == {TP: start}
    loop = PartitionOffsets()
    for offset in offsets:
        loop.add(offset, 0)
    done: set[int] = set()
    reported = start
    for offset in data.draw(st.permutations(offsets)):
        loop.finish(offset)
        done.add(offset)
        if (commit := loop.to_commit()) is not None:
            answered.answered(TP, commit)
            loop.last_committed = commit
        position = answered.owned()[TP]
        assert position >= reported  # never backwards within one ownership
        reported = position
        assert all(o in done for o in offsets if o < position)
    answered.written(answered.unwritten())
    assert answered.unwritten() == {}


def test_a_released_partition_is_no_longer_reported() -> None:
    answered = AnsweredThrough()
    answered.take(TP, 5)
    answered.release(TP)
    answered.answered(TP, 9)  # the loop's final commit of a partition given up
    assert answered.owned() == {}
    assert answered.unwritten() == {}
