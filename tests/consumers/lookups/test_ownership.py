"""Rendezvous ownership of the lookup partitions: one owner each, and minimal moves."""

from __future__ import annotations

from aiokafka import TopicPartition
from hypothesis import given
from hypothesis import strategies as st

from consumers.lookups.ownership import owned_by, owner, weight

PARTITIONS = [TopicPartition(t, p) for t in ("calls.lookups", "sms.lookups") for p in range(12)]
members_st = st.sets(st.uuids().map(lambda u: u.hex), min_size=1, max_size=8)


def test_no_member_no_owner() -> None:
    assert owner(set(), PARTITIONS[0]) is None
    assert owned_by("a", set(), PARTITIONS) == set()


def test_the_weight_is_stable_across_processes() -> None:
    # blake2b of the same bytes: every replica, whatever its Python or PYTHONHASHSEED, agrees.
    assert weight("m1", TopicPartition("calls.lookups", 3)) == 0xDFBB6E35FF814880
    assert weight("m1", TopicPartition("calls.lookups", 4)) != 0xDFBB6E35FF814880


@given(members_st)
def test_every_partition_has_exactly_one_owner(members: set[str]) -> None:
    shares = [owned_by(m, members, PARTITIONS) for m in members]
    assert sum(len(s) for s in shares) == len(PARTITIONS)
    assert set().union(*shares) == set(PARTITIONS)
    # Whatever order a replica lists the members in, it finds the same owner.
    for tp in PARTITIONS:
        assert owner(sorted(members), tp) == owner(sorted(members, reverse=True), tp)


@given(members_st, st.uuids().map(lambda u: u.hex))
def test_a_member_that_joins_takes_only_what_it_wins(members: set[str], new: str) -> None:
    before = {tp: owner(members, tp) for tp in PARTITIONS}
    after = {tp: owner(members | {new}, tp) for tp in PARTITIONS}
    moved = {tp for tp in PARTITIONS if before[tp] != after[tp]}
    assert all(after[tp] == new for tp in moved)


@given(members_st.filter(lambda m: len(m) >= 2), st.data())
def test_a_member_that_leaves_gives_up_only_its_own(members: set[str], data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(sorted(members)))
    before = {tp: owner(members, tp) for tp in PARTITIONS}
    after = {tp: owner(members - {gone}, tp) for tp in PARTITIONS}
    moved = {tp for tp in PARTITIONS if before[tp] != after[tp]}
    assert moved == {tp for tp in PARTITIONS if before[tp] == gone}
