"""When a group member has certainly lost its partitions, and must stop starting work.

A member whose coordinator has not heard from it for the session timeout has been evicted:
its partitions belong to someone else, or will once the group has rebalanced. Whatever it
starts from then on, the partitions' next owner starts again from the last commit. After a
broker cut longer than the session timeout, a replica's fetcher reconnects before its
coordinator learns of the eviction, and the replica went on to deliver the backlog it fetched
(1048 duplicates of 4498 events in docs/reliability.md).

The loop cannot ask aiokafka when its last heartbeat succeeded, but it can see its own
commits, which go to the same coordinator: a member whose commits have failed for a session
timeout is fenced. Fenced, the loop hands the handler nothing more (fetched records wait,
their partitions paused), nor polls it, so that it starts no work of its own (parked
deliveries read back, held ones taken up), until the group assigns it partitions again or a
commit succeeds (it was a member after all, and the records it kept are offered in order). A
loop with nothing to commit would see nothing, so it commits its last offsets again as a probe
when it has made no commit for a third of the session timeout, as a heartbeat would.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

# An idle loop probes this often, in session timeouts: aiokafka's heartbeat interval, so that
# a cut is seen at most a third of a session timeout late.
PROBE_SHARE: Final = 1 / 3


@dataclass(frozen=True, slots=True)
class Attempt:
    """One commit under way: when it started, and in which assignment."""

    started: float
    assignment: int


class Fence:
    def __init__(
        self, after_seconds: float | None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        # None: never fence (a loop whose duplicates cost nothing, or a test's).
        self._after = after_seconds
        self._clock = clock
        self._failing_since: float | None = None
        self._last_attempt = clock()
        # Counts assignments, so that a commit failure is not blamed on an assignment made
        # while it was awaited (aiokafka runs the rebalance callbacks during a commit).
        self._assignment = 0
        self.fenced = False

    def attempt(self) -> Attempt:
        now = self._clock()
        self._last_attempt = now
        return Attempt(now, self._assignment)

    def probe_due(self) -> bool:
        return (
            self._after is not None
            and self._clock() - self._last_attempt >= self._after * PROBE_SHARE
        )

    def failed(self, attempt: Attempt) -> bool:
        """A commit failed; True when this fences the member."""
        if self._after is None or attempt.assignment != self._assignment:
            return False
        # From the start of the first failed attempt: a commit that hung through a cut and
        # failed once the link came back has been failing since it was sent.
        if self._failing_since is None:
            self._failing_since = attempt.started
        if self.fenced or self._clock() - self._failing_since < self._after:
            return False
        self.fenced = True
        return True

    def succeeded(self) -> bool:
        """A commit succeeded: still a member. True when this lifts the fence."""
        return self._clear()

    def assigned(self) -> bool:
        """The group assigned partitions (a new generation); True when this lifts the fence."""
        self._assignment += 1
        return self._clear()

    def _clear(self) -> bool:
        self._failing_since = None
        lifted, self.fenced = self.fenced, False
        return lifted
