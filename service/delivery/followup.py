"""What happens to a job after the pool is done with it.

The pool calls exactly one of these per job; each ends with `job.finish(ending)` once what follows
is durable (a retry record or a dead letter acknowledged by the broker), or at once when
nothing needs to be.
"""

from __future__ import annotations

from typing import Protocol

from service.delivery.circuit import Transition
from service.delivery.job import DeliveryJob, Ending
from service.delivery.outcomes import AttemptResult


class Followup(Protocol):
    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None:
        """An attempt was made; `transition` is what it did to the endpoint's circuit."""
        ...

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        """No attempt can be made: a dead letter with `reason`."""
        ...


class FinishOnly:
    """A followup that only finishes jobs: for a pool used without Kafka (tests)."""

    def attempted(
        self, job: DeliveryJob, result: AttemptResult, transition: Transition | None
    ) -> None:
        job.finish(Ending.DELIVERED if result.ok else Ending.RETRYING)

    def give_up(self, job: DeliveryJob, reason: str) -> None:
        job.finish(Ending.DEAD_LETTERED)
