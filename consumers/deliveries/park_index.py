"""Which deliveries of a partition are parked, and where their copies are: the owner's index.

A parked endpoint's index grows by one entry per delivery parked, 100,000 for the
benchmark's backlog, so it is kept as two arrays of 8-byte offsets per endpoint and source
topic (about 16 bytes an entry; a dict of tuples took 240), sorted by source offset: that is
the order deliveries are parked in, and the order they are taken up again in, so that an
endpoint's deliveries of one topic keep their order (an ordered subscription's first
attempts rely on it).
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator
from typing import Final

import msgspec
from aiokafka import ConsumerRecord

Source = tuple[str, int]  # the parked record's source topic and offset (its partition is p)

# The parked offset of an entry whose copy is not acknowledged yet, and of one removed.
UNWRITTEN: Final = -1
_REMOVED: Final = -2
_KEY: Final = msgspec.json.Decoder(list[str | int])


class _Parked:
    """One endpoint's parked deliveries from one source topic, by source offset."""

    __slots__ = ("at", "head", "live", "offsets")

    def __init__(self) -> None:
        self.offsets = array("q")
        self.at = array("q")
        self.head = 0  # entries before it are all removed
        self.live = 0

    def _find(self, offset: int) -> int | None:
        i = bisect.bisect_left(self.offsets, offset, self.head)
        if i < len(self.offsets) and self.offsets[i] == offset:
            return i
        return None

    def add(self, offset: int, at: int) -> None:
        if not self.offsets or offset > self.offsets[-1]:
            self.offsets.append(offset)
            self.at.append(at)
            self.live += 1
            return
        i = self._find(offset)
        if i is not None:  # its copy acknowledged, or parked again
            self.live += self.at[i] == _REMOVED
            self.at[i] = at
            return
        # Out of order: a copy written again after a broker error lands after later ones.
        i = bisect.bisect_left(self.offsets, offset, self.head)
        self.offsets.insert(i, offset)
        self.at.insert(i, at)
        self.live += 1

    def remove(self, offset: int) -> None:
        i = self._find(offset)
        if i is None or self.at[i] == _REMOVED:
            return
        self.at[i] = _REMOVED
        self.live -= 1
        while self.head < len(self.at) and self.at[self.head] == _REMOVED:
            self.head += 1
        if self.head > len(self.at) // 2:  # taken up from the front: drop what is behind
            del self.offsets[: self.head]
            del self.at[: self.head]
            self.head = 0

    def at_of(self, offset: int) -> int | None:
        i = self._find(offset)
        return None if i is None or self.at[i] == _REMOVED else self.at[i]

    def entries(self) -> Iterator[tuple[int, int]]:
        for i in range(self.head, len(self.offsets)):
            if self.at[i] != _REMOVED:
                yield self.offsets[i], self.at[i]


class ParkIndex:
    """One partition's parked deliveries, per endpoint: source → the parked copy's offset in
    the parking topic (UNWRITTEN until acknowledged)."""

    def __init__(self) -> None:
        self._by_sub: dict[str, dict[str, _Parked]] = {}
        self.unreadable = 0

    def fold(self, record: ConsumerRecord) -> None:
        """Apply one record of the parking topic, in topic order; never raises."""
        try:
            match _KEY.decode(record.key or b""):
                case ["p", str(sub), str(topic), int(offset)]:
                    if record.value is None:
                        self.remove(sub, (topic, offset))
                    else:
                        self.add(sub, (topic, offset), record.offset)
                case _:
                    self.unreadable += 1
        except (msgspec.DecodeError, msgspec.ValidationError):
            self.unreadable += 1

    def add(self, sub_id: str, source: Source, at: int) -> None:
        topic, offset = source
        self._by_sub.setdefault(sub_id, {}).setdefault(topic, _Parked()).add(offset, at)

    def remove(self, sub_id: str, source: Source) -> None:
        topics = self._by_sub.get(sub_id)
        if topics is None or (parked := topics.get(source[0])) is None:
            return
        parked.remove(source[1])
        if not parked.live:
            del topics[source[0]]
            if not topics:
                del self._by_sub[sub_id]

    def has(self, sub_id: str) -> bool:
        return sub_id in self._by_sub

    def contains(self, sub_id: str, source: Source) -> bool:
        return self.at_of(sub_id, source) is not None

    def at_of(self, sub_id: str, source: Source) -> int | None:
        """Where the source's copy is (UNWRITTEN until acknowledged); None: not parked."""
        parked = self._by_sub.get(sub_id, {}).get(source[0])
        return None if parked is None else parked.at_of(source[1])

    def subs(self) -> list[str]:
        return list(self._by_sub)

    def queue(self, sub_id: str) -> Iterator[tuple[Source, int]]:
        """The endpoint's parked deliveries, each topic's in source order."""
        for topic, parked in list(self._by_sub.get(sub_id, {}).items()):
            for offset, at in parked.entries():
                yield (topic, offset), at

    def count(self) -> int:
        return sum(p.live for topics in self._by_sub.values() for p in topics.values())
