"""When a failed delivery is tried again, and through which retry topic: pure decisions.

The schedule lists the wait before each retry: after the n-th failed attempt the next one is
due `schedule[n-1]` later (the last entry repeats), randomized ±20%. Each distinct wait is a
tier: a topic `<prefix>.<wait>` whose consumer holds every record until its due time. A record
always goes to the smallest tier whose longest jittered wait covers its own, so a record never
waits at the head of a tier much longer than the records produced after it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Final

# Waits are spread ±20% so that deliveries that failed together do not come back together.
JITTER: Final = 0.2
# Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h (about 28 hours).
DEFAULT_SCHEDULE: Final = (0.0, 5.0, 300.0, 1800.0, 7200.0, 18000.0, 36000.0, 36000.0)


@dataclass(frozen=True, slots=True)
class Retry:
    tier: float  # the nominal wait of the tier topic the record goes to
    wait: float  # seconds from now to the due time


@dataclass(frozen=True, slots=True)
class GiveUp:
    reason: str  # "exhausted" or "retry_window"


class RetrySchedule:
    def __init__(self, waits: tuple[float, ...], *, topic_prefix: str) -> None:
        if not waits or any(w < 0 for w in waits):
            raise ValueError("the retry schedule needs at least one wait, none negative")
        self.waits = waits
        self.tiers: tuple[float, ...] = tuple(sorted(set(waits)))
        self._prefix = topic_prefix

    @property
    def default_max_attempts(self) -> int:
        """The first attempt plus one per entry of the schedule."""
        return 1 + len(self.waits)

    def topic(self, tier: float) -> str:
        return f"{self._prefix}.{tier_name(tier)}"

    def topics(self) -> list[str]:
        return [self.topic(t) for t in self.tiers]

    def is_tier(self, topic: str) -> bool:
        return topic.startswith(self._prefix + ".")

    def tier_of_topic(self, topic: str) -> str:
        return topic.removeprefix(self._prefix + ".")

    def tier_for(self, wait: float) -> float:
        """The smallest tier whose longest jittered wait covers `wait` (else the largest)."""
        for tier in self.tiers:
            if wait <= tier * (1 + JITTER):
                return tier
        return self.tiers[-1]

    def earliest_due(self, tier: float) -> float:
        """The shortest wait of a record of the tier: a wait goes to the smallest tier that
        covers it (`tier_for`), so the one before covers every shorter wait. The first tier's
        records may be due at once (dead letters are replayed through it too)."""
        i = self.tiers.index(tier)
        return 0.0 if i == 0 else self.tiers[i - 1] * (1 + JITTER)

    def nominal_wait(self, failed_attempts: int) -> float:
        """The schedule's wait after `failed_attempts` (>= 1) attempts have failed."""
        return self.waits[min(failed_attempts, len(self.waits)) - 1]

    def after_failure(
        self,
        *,
        failed_attempts: int,
        first_attempt_at: float,
        now: float,
        max_attempts: int,
        window: float,
        retry_after: float | None = None,
        retry_after_cap: float = 3600.0,
    ) -> Retry | GiveUp:
        """What follows the `failed_attempts`-th failed attempt of a delivery."""
        if failed_attempts >= max_attempts:
            return GiveUp("exhausted")
        wait = jittered(self.nominal_wait(failed_attempts))
        if retry_after is not None:
            # The receiver's own word wins over a shorter schedule, within reason: a hostile
            # Retry-After of a year must not park a delivery past its window unexamined.
            cap = min(retry_after_cap, self.tiers[-1] * (1 + JITTER))
            wait = max(wait, min(retry_after, cap))
        if now + wait > first_attempt_at + window:
            return GiveUp("retry_window")
        return Retry(self.tier_for(wait), wait)


def jittered(seconds: float) -> float:
    return seconds * random.uniform(1 - JITTER, 1 + JITTER)  # noqa: S311 - jitter, not a secret


def tier_name(tier: float) -> str:
    """`5s`, `300s`, `0.25s`: a topic-name-safe spelling of a wait."""
    return f"{tier:g}s"


def parse_retry_after(value: str | None, *, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit also says yes to "²"
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:  # an HTTP-date is GMT by definition
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
