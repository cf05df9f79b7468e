"""One event to one subscription: its attempts so far, and whether it is finished."""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, Protocol

from service.delivery.record import LastError, Origin
from service.delivery.signing import message_id
from service.events.envelope import Event
from service.subscriptions.model import Subscription

if TYPE_CHECKING:
    from opentelemetry.context import Context

# What a job built outside a Kafka record (a test send) says about where it came from.
NO_ORIGIN: Final = Origin("", -1, -1)


class Ending(enum.Enum):
    """How a finished job ended: what its key waits for next, when it is ordered."""

    DELIVERED = "delivered"
    RETRYING = "retrying"  # its next attempt is in a retry tier
    DEAD_LETTERED = "dead_lettered"


def _finished() -> None:
    """A finished or cancelled job's callback: it has been called, or never will be."""


class DeliveryJob:
    """A delivery while it is in this process. The pool makes its attempt; the followup
    makes what follows durable and then finishes it, which calls `on_done` once."""

    __slots__ = (
        "_done",
        "_on_done",
        "_step",
        "attempts",
        "ending",
        "event",
        "first_attempt_at",
        "last_error",
        "msg_id",
        "origin",
        "replay_of",
        "sent",
        "sequence",
        "started",
        "sub",
        "sub_id",
        "trace_parent",
    )

    def __init__(
        self,
        event: Event,
        sub_id: str,
        sub: Subscription | None,
        on_done: Callable[[], None],
        *,
        origin: Origin = NO_ORIGIN,
        attempts: int = 0,
        sent: int | None = None,
        first_attempt_at: float | None = None,
        last_error: LastError | None = None,
        replay_of: str | None = None,
        trace_parent: Context | None = None,
        sequence: int | None = None,
    ) -> None:
        self.event = event
        self.sub_id = sub_id
        # The subscription as last read; None when it was deleted before the job was made.
        self.sub = sub
        self._on_done = on_done
        self.origin = origin
        self.msg_id = message_id(sub_id, event.id)
        self.attempts = attempts  # made before this job, plus this job's once it is made
        # Those of them that made a request: the receiver has seen this delivery `sent` times.
        self.sent = attempts if sent is None else sent
        self.first_attempt_at = first_attempt_at
        # The error of the latest failed attempt (this job's, or the one before it).
        self.last_error = last_error
        self.replay_of = replay_of
        # Its number in its key's sequence (ordered subscriptions only).
        self.sequence = sequence
        # Set when it finishes.
        self.ending: Ending | None = None
        # With tracing on: where the job's next span hangs (the record's consume span, then
        # its latest attempt's); None with tracing off.
        self.trace_parent = trace_parent
        self._done = False
        # This job's attempt has begun (its request may be on the wire).
        self.started = False
        # The followup's durable step (a produce), cancelled with the job.
        self._step: asyncio.Task[None] | None = None

    @property
    def done(self) -> bool:
        """Finished or cancelled."""
        return self._done

    @property
    def handed_on(self) -> bool:
        """The followup has taken the job over."""
        return self._step is not None

    def reread(self, sub: Subscription) -> None:
        """The subscription as read just before the attempt (an edit applies to queued jobs)."""
        self.sub = sub

    def attempting(self, now: float, *, sending: bool = True) -> None:
        """An attempt begins; `sending` is False for one counted without a request."""
        self.started = True
        if self.first_attempt_at is None:
            self.first_attempt_at = now
        self.attempts += 1
        if sending:
            self.sent += 1

    def failed(self, error: LastError) -> None:
        self.last_error = error

    def hand_on(self, step: asyncio.Task[None]) -> None:
        """The followup's durable step; it finishes the job once acknowledged."""
        self._step = step

    def finish(self, ending: Ending) -> None:
        """What follows the attempt is durable: the job's record may be committed."""
        if not self._done:
            self._done = True
            self.ending = ending
            # Let go of the callback: it is usually a closure over this job, and the cycle
            # would leave every finished job (its event's bytes too) to the cyclic collector,
            # whose full collections were a tenth of the service's CPU at volume.
            on_done, self._on_done = self._on_done, _finished
            on_done()

    def cancel(self) -> None:
        """Abandon the job: no further attempt, no produce, and it will never finish."""
        if not self._done:
            self._done = True
            self._on_done = _finished
            if self._step is not None:
                self._step.cancel()


class JobQueue(Protocol):
    """Where jobs go for their next attempt: the delivery pool."""

    def submit(self, job: DeliveryJob) -> None: ...

    def wait_before_more(self, sub_id: str) -> float | None: ...

    def room(self, sub_id: str, default: int) -> int: ...

    def drains_in(self, sub_id: str) -> float: ...
