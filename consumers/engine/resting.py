"""Idle partitions left out of fetches, and looked at now and then.

aiokafka puts every partition that is not paused into every fetch request and decodes each one
in the answer, in Python, on the delivery path's core: about 16 µs per partition per fetch
here (`bench/idle_fetch.py`), whether it brings anything or not. The delivery group reads the
retry tiers beside the deliveries topic, co-partitioned in one group: 96 partitions by
default, of which the tiers' are idle nearly always.

A partition of a topic that may rest is paused after a first look once it is assigned, and
again once nothing has come from it for `QUIET_SECONDS` (a partition whose records wait for
their due time is paused for them, and looked at once they are taken). Every `LOOK_EVERY`
seconds it is resumed until two fetches have answered for it since (the consumer's
`last_poll_timestamp`; the second only once what the first brought was taken, `_Look`) and
the loop has polled once more; anything taken makes it busy again. Resting loses nothing: a
paused partition's position does not move, and what was prefetched for it is kept for its
resume (consumers/engine/group_loop.py).

What it costs is lateness: a record written to a resting partition is read at the next look,
up to `look_within` seconds later. So a topic may rest only when its records cannot be due
that soon (`may_rest`): a retry tier whose shortest wait is longer than that, never the first
tiers, which hold immediate retries and replays.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Final

from aiokafka import TopicPartition

# How often a resting partition is looked at: what a record written to it by another member
# (a former owner, a replay served elsewhere) may wait before it is read.
LOOK_EVERY: Final = 2.0
# A partition that brought records keeps being fetched this long after the last: retries
# come in bursts (an endpoint that was down), and a partition read again within a few
# seconds would only go back and forth.
QUIET_SECONDS: Final = 5.0


def look_within(fetch_max_wait_ms: int, poll_timeout_ms: int) -> float:
    """The longest a record written to a resting partition waits to be read: until the next
    look, then the look itself: the loop's turn that starts it, the fetch already under way
    (which a broker may hold for its full wait), the one that names the partition, the one
    after it (`_Look`), and the turn that takes what they brought."""
    return LOOK_EVERY + 3 * fetch_max_wait_ms / 1000 + 2 * poll_timeout_ms / 1000


def may_rest(earliest_due: float, fetch_max_wait_ms: int, poll_timeout_ms: int) -> bool:
    """Whether a topic whose records are due `earliest_due` seconds after they are written at
    the soonest may rest: read at the next look, none of them is late."""
    return earliest_due > look_within(fetch_max_wait_ms, poll_timeout_ms)


class _Look:
    """A look ends at the turn after the second fetch answer for its partition since it
    began. The first may bring records that the consumer keeps behind other partitions'
    (a poll returns at most `max_poll_records`, oldest answers first), and it fetches a
    partition again only once all it kept of it was taken: a second answer means that the
    first one's records, if any, were taken (a partition that brought records is busy, and
    not looked at any more)."""

    __slots__ = ("answered_turn", "first_answer_ms", "since_ms")

    def __init__(self, since_ms: int) -> None:
        self.since_ms = since_ms
        self.first_answer_ms: int | None = None
        self.answered_turn: int | None = None


class Resting:
    """Which partitions of `topics` rest now. The loop tells it what it takes and what it is
    assigned, and asks once per turn (`resting`): answered from the last answer unless a
    look is under way, records came, or a partition's quiet time or next look has come, so
    that a turn costs nothing per partition."""

    def __init__(
        self,
        topics: Iterable[str],
        *,
        look_every: float = LOOK_EVERY,
        quiet_seconds: float = QUIET_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        self.topics = frozenset(topics)
        self._look_every = look_every
        self._quiet_seconds = quiet_seconds
        self._clock = clock
        self._wall_ms = wall_ms
        # Per partition of those topics: when it last brought records (or was assigned), and
        # when it is next looked at while resting, or the look under way.
        self._active_at: dict[TopicPartition, float] = {}
        self._next_look: dict[TopicPartition, float] = {}
        self._looks: dict[TopicPartition, _Look] = {}
        self._turn = 0
        # The last answer, and when it can change next without being told.
        self._resting: frozenset[TopicPartition] = frozenset()
        self._changes_at = 0.0
        self._dirty = False

    def assigned(self, tps: Iterable[TopicPartition]) -> None:
        """Newly assigned: looked at before resting, so that what waits from the committed
        offset on is read (a fetch answers for a partition only from a valid position), but
        not fetched for a quiet time first. Each rebalance assigns the delivery group's 96
        partitions anew, and a replica starting on a backlog fetched all of them every time
        for its first 5 s (docs/performance.md)."""
        quiet_since = self._clock() - self._quiet_seconds
        for tp in tps:
            if tp.topic in self.topics:
                self._active_at[tp] = quiet_since
                self._dirty = True

    def revoked(self, tps: Iterable[TopicPartition]) -> None:
        for tp in tps:
            self._active_at.pop(tp, None)
            self._next_look.pop(tp, None)
            self._looks.pop(tp, None)
        self._dirty = True

    def took(self, tp: TopicPartition) -> None:
        """Records came from the partition, or were taken from what it had waiting."""
        if tp in self._active_at:
            self._active_at[tp] = self._clock()
            self._looks.pop(tp, None)
            self._dirty = True

    def resting(
        self,
        polled_at: Callable[[TopicPartition], int | None],
        waiting: Callable[[TopicPartition], bool],
    ) -> frozenset[TopicPartition]:
        """The partitions to leave out of fetches now. `polled_at`: unix ms of the consumer's
        last fetch answer for the partition. `waiting`: the loop keeps records of the
        partition that are not due yet; it is paused for them, and not looked at."""
        self._turn += 1
        now = self._clock()
        if self._looks:
            self._end_looks(polled_at, now)
        if self._dirty or now >= self._changes_at:
            self._decide(now, waiting)
        return self._resting

    def _end_looks(self, polled_at: Callable[[TopicPartition], int | None], now: float) -> None:
        """Looks whose answers came and were taken: those partitions rest again."""
        for tp, look in list(self._looks.items()):
            if look.answered_turn is None:
                answered = polled_at(tp)
                if answered is None or answered < look.since_ms:
                    continue
                if look.first_answer_ms is None:
                    look.first_answer_ms = answered
                elif answered > look.first_answer_ms:
                    look.answered_turn = self._turn
            elif self._turn > look.answered_turn:
                del self._looks[tp]
                self._next_look[tp] = now + self._look_every
                self._dirty = True

    def _decide(self, now: float, waiting: Callable[[TopicPartition], bool]) -> None:
        self._dirty = False
        resting: set[TopicPartition] = set()
        changes_at = float("inf")
        for tp, active_at in self._active_at.items():
            if (quiet_at := active_at + self._quiet_seconds) > now:
                changes_at = min(changes_at, quiet_at)
            elif tp in self._looks:
                continue
            elif now >= (look_at := self._next_look.get(tp, now)):
                if waiting(tp):  # paused for its records; looked at once they are taken
                    self._next_look[tp] = now + self._look_every
                    changes_at = min(changes_at, now + self._look_every)
                    resting.add(tp)
                else:
                    # The first rest starts with a look too: whatever came since the last
                    # fetch of it is seen before it rests.
                    self._looks[tp] = _Look(self._wall_ms() + 1)
            else:
                changes_at = min(changes_at, look_at)
                resting.add(tp)
        self._resting = frozenset(resting)
        self._changes_at = changes_at
