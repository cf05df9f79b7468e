"""This member's writes to the lookup members topic: its heartbeats, with the positions of
the partitions it owns ahead of each, and its leaving (final positions, then a tombstone)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Final

import structlog
from aiokafka import TopicPartition

from consumers.engine.contract import Producer
from consumers.engine.produce import Write, produce_many
from consumers.lookups.members import ENCODER, Heartbeat, Position, member_key, position_key
from consumers.lookups.positions import AnsweredThrough
from consumers.lookups.roster import Roster
from service.config import Settings

log = structlog.get_logger("switchboard.lookups")

ROLE: Final = "lookup_members"
# A crashed member leaves its key behind; the first replica to find it silent this many
# member timeouts tombstones it, so that the topic does not grow with every crash. Long
# enough that a member that is only slow is never forgotten while it still heartbeats.
_FORGET_AFTER_TIMEOUTS: Final = 10
# A leaving member's last writes wait this long at most: with the brokers away it leaves
# anyway, and its partitions move after the member timeout instead.
LEAVE_SECONDS: Final = 2.0


class Heartbeats:
    def __init__(
        self,
        producer: Producer,
        settings: Settings,
        *,
        member: str,
        roster: Roster,
        answered: AnsweredThrough,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._producer = producer
        self._topic = settings.lookup_members_topic
        self._interval = settings.lookup_heartbeat_seconds
        self._forget_after = _FORGET_AFTER_TIMEOUTS * settings.lookup_member_timeout_seconds
        self._member = member
        self._reads = tuple(settings.lookup_topics)
        self._roster = roster
        self._answered = answered
        self._clock = clock
        # Set once the first heartbeat is acknowledged.
        self.beating = asyncio.Event()

    async def run(self) -> None:
        """Heartbeat for ever, from the moment the member's view of the others has settled:
        a member that announced itself earlier would be given partitions that its own view
        still gives to members long gone, and nobody would answer them meanwhile."""
        await self._roster.loaded.wait()
        await self._roster.wait_until(lambda: self._roster.membership.settled(self._clock()))
        while True:
            await self._beat()
            self.beating.set()
            await asyncio.sleep(self._interval)

    async def _beat(self) -> None:
        positions = self._answered.unwritten()
        silent = self._roster.membership.silent_for(self._clock(), self._forget_after)
        beat = Write(ENCODER.encode(Heartbeat(self._member, self._reads)), member_key(self._member))
        forgotten = [Write(None, member_key(m)) for m in silent]
        writes = [*self._positions(positions), *forgotten, beat]
        await produce_many(self._producer, self._topic, ROLE, writes)
        self._answered.written(positions)
        for member in silent:
            log.info("lookup_member_forgotten", member=member)
            self._roster.membership.forget(member)

    def _positions(self, positions: dict[TopicPartition, int]) -> list[Write]:
        return [
            Write(ENCODER.encode(Position(offset, self._member)), position_key(tp))
            for tp, offset in sorted(positions.items())
        ]

    async def leave(self) -> None:
        """Report the final positions, then tombstone this member, so that the others take
        its partitions over at once, from there. Call once `run` has been cancelled: a
        heartbeat after the tombstone would bring the member back."""
        writes = [*self._positions(self._answered.owned()), Write(None, member_key(self._member))]
        try:
            async with asyncio.timeout(LEAVE_SECONDS):
                await produce_many(self._producer, self._topic, ROLE, writes)
        except TimeoutError:
            log.warning("lookup_leave_unwritten", seconds=LEAVE_SECONDS)
        else:
            log.info("lookup_member_left", member=self._member)
