"""The lookup members topic: its records, and what a replica folds them into.

Keys (the topic is compacted, so each key's last value is what a new reader finds):

    member:<id>                  a heartbeat, `{"member": id, "topics": [...]}` (the lookup
                                 topics it reads); a tombstone when it leaves
    position:<topic>:<partition> `{"offset": n, "member": id}`: every lookup request of the
                                 partition below n has been answered (its reply acknowledged),
                                 as its owner last reported

A member is live while its last heartbeat was *read* here less than the member timeout ago,
on this replica's monotonic clock: the record's timestamp is another pod's clock. Records
read in the initial load all arrive at once, however old: until each member seen there has
been heard from again, or the timeout has passed, the view is not `settled`, and a replica
must not claim partitions from it (a member that crashed long ago would look live).
"""

from __future__ import annotations

from typing import Final

import msgspec
from aiokafka import TopicPartition

MEMBER_PREFIX: Final = "member:"
POSITION_PREFIX: Final = "position:"


class Heartbeat(msgspec.Struct, frozen=True):
    member: str
    # A partition is owned only among the members that read its topic: replicas rolling out
    # a change of LOOKUP_TOPICS, or another deployment sharing the topic by mistake, never
    # win partitions they do not read.
    topics: tuple[str, ...]


class Position(msgspec.Struct, frozen=True):
    offset: int
    member: str


_HEARTBEAT: Final = msgspec.json.Decoder(Heartbeat)
_POSITION: Final = msgspec.json.Decoder(Position)
ENCODER: Final = msgspec.json.Encoder()


class UnreadableRecord(ValueError):
    """A record of the members topic this version cannot read; skipped with this reason."""


def member_key(member: str) -> bytes:
    return f"{MEMBER_PREFIX}{member}".encode()


def position_key(tp: TopicPartition) -> bytes:
    # Topic names cannot hold a colon, so the last one separates the partition.
    return f"{POSITION_PREFIX}{tp.topic}:{tp.partition}".encode()


class Membership:
    """Live members and reported positions, folded from the members topic."""

    def __init__(self, timeout: float) -> None:
        self._timeout = timeout
        # member id -> when its last heartbeat was read (monotonic seconds), and its topics
        self._heard: dict[str, float] = {}
        self._reads: dict[str, frozenset[str]] = {}
        self._positions: dict[TopicPartition, int] = {}
        self._loaded_at: float | None = None

    def fold(self, key: bytes | None, value: bytes | None, now: float) -> None:
        """Apply one record read at `now`; raises UnreadableRecord (nothing applied)."""
        try:
            text = (key or b"").decode()
        except UnicodeDecodeError:
            raise UnreadableRecord("the key is not UTF-8") from None
        if text.startswith(MEMBER_PREFIX):
            self._fold_member(text.removeprefix(MEMBER_PREFIX), value, now)
        elif text.startswith(POSITION_PREFIX):
            self._fold_position(text.removeprefix(POSITION_PREFIX), value)
        else:
            raise UnreadableRecord(f"unknown key {text[:80]!r}")

    def _fold_member(self, member: str, value: bytes | None, now: float) -> None:
        if not member:
            raise UnreadableRecord("a member key without an id")
        if value is None:  # it left: its partitions go to the others at once
            self.forget(member)
            return
        try:
            beat = _HEARTBEAT.decode(value)
        except msgspec.DecodeError as exc:
            raise UnreadableRecord(f"heartbeat: {exc}") from None
        if beat.member != member:
            raise UnreadableRecord("a heartbeat under another member's key")
        self._heard[member] = now
        self._reads[member] = frozenset(beat.topics)

    def _fold_position(self, rest: str, value: bytes | None) -> None:
        topic, _, number = rest.rpartition(":")
        if not topic or not number.isdigit():
            raise UnreadableRecord(f"position key {rest[:80]!r} is not <topic>:<partition>")
        tp = TopicPartition(topic, int(number))
        if value is None:
            self._positions.pop(tp, None)
            return
        try:
            position = _POSITION.decode(value)
        except msgspec.DecodeError as exc:
            raise UnreadableRecord(f"position: {exc}") from None
        if position.offset < 0:
            raise UnreadableRecord("a negative position")
        # The last report wins, whoever made it: each is true of its writer (every request
        # below it was answered), so starting from any of them skips nothing.
        self._positions[tp] = position.offset

    def mark_loaded(self, now: float) -> None:
        """The topic has been read to the end it had at start."""
        self._loaded_at = now

    def settled(self, now: float) -> bool:
        """Whether `live` can be trusted: loaded, and every member read in the load heard
        from since (or given the timeout to be)."""
        loaded = self._loaded_at
        if loaded is None:
            return False
        return now - loaded >= self._timeout or all(t > loaded for t in self._heard.values())

    def live(self, now: float) -> frozenset[str]:
        return frozenset(m for m, t in self._heard.items() if now - t < self._timeout)

    def readers(self, now: float) -> dict[str, frozenset[str]]:
        """Per topic, the live members that read it."""
        out: dict[str, set[str]] = {}
        for member in self.live(now):
            for topic in self._reads.get(member, ()):
                out.setdefault(topic, set()).add(member)
        return {topic: frozenset(members) for topic, members in out.items()}

    def silent_for(self, now: float, seconds: float) -> list[str]:
        """Members not heard from for `seconds` (crashed ones leave their key behind)."""
        return [m for m, t in self._heard.items() if now - t >= seconds]

    def forget(self, member: str) -> None:
        self._heard.pop(member, None)
        self._reads.pop(member, None)

    def position(self, tp: TopicPartition) -> int | None:
        """The last answered-through offset reported for `tp`, if any."""
        return self._positions.get(tp)
