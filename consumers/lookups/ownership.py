"""Which live member answers a partition of the lookup topics: rendezvous (highest random
weight) hashing.

Every member computes the owner of every partition from the same inputs (the live member
ids it has read, the partition), with no coordination: the member with the highest hash of
(member, topic, partition) wins. A member that joins takes only the partitions it now wins;
one that leaves gives up only its own, each to the member that came second there. Nothing
else moves, unlike a group's reassignment of everything.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable

from aiokafka import TopicPartition


def weight(member: str, tp: TopicPartition) -> int:
    """A stable hash: the same on every replica and every Python (unlike `hash()`)."""
    data = f"{member}\0{tp.topic}\0{tp.partition}".encode()
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "big")


def owner(members: Collection[str], tp: TopicPartition) -> str | None:
    """The member that answers `tp`, or None when there is none. Ties (64-bit hashes: never
    in practice) go to the greater id, so that every member still agrees."""
    return max(members, key=lambda m: (weight(m, tp), m), default=None)


def owned_by(
    member: str, members: Collection[str], partitions: Iterable[TopicPartition]
) -> set[TopicPartition]:
    """The partitions `member` answers among `partitions`."""
    return {tp for tp in partitions if owner(members, tp) == member}
