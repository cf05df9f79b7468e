"""Ops events on `switchboard.ops`: notifications a platform can forward to its customers.

They are CloudEvents like the ones the service reads, keyed by subscription id. They are
notifications, produced in the background: they never hold a record back, and what is
still being produced at shutdown is given a moment and then dropped.
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Final

import msgspec
import structlog

from consumers.engine.contract import Producer
from consumers.engine.produce import produce
from service.events.envelope import rfc3339
from service.observability import metrics

log = structlog.get_logger("switchboard.ops")

OPS_TYPES: Final = ("endpoint.failing", "endpoint.recovered", "endpoint.disabled",
                    "delivery.exhausted")  # fmt: skip
# At shutdown, notifications still under way get this long before they are dropped.
_CLOSE_SECONDS: Final = 2.0
_ENCODER: Final = msgspec.json.Encoder()


def transition_id(kind: str, sub_id: str, version: str) -> str:
    """The same id for the same transition of the same version of a subscription, on any
    replica: two replicas that disable it at once (each took a 410) publish two records,
    and a consumer deduplicating on the CloudEvents id, as the spec allows, notifies once."""
    digest = hashlib.sha256(f"{kind}\n{sub_id}\n{version}".encode()).hexdigest()
    return "op_" + digest[:24]


class OpsEvents:
    def __init__(
        self, producer: Producer, topic: str, *, clock: Callable[[], float] = time.time
    ) -> None:
        self._producer = producer
        self._topic = topic
        self._clock = clock
        self._background: set[asyncio.Task[None]] = set()

    def notify(
        self,
        kind: str,
        sub_id: str,
        tenant_id: str,
        data: dict[str, object],
        *,
        event_id: str | None = None,
    ) -> None:
        """Publish in the background."""
        self.in_background(self.publish(kind, sub_id, tenant_id, data, event_id=event_id))

    async def publish(
        self,
        kind: str,
        sub_id: str,
        tenant_id: str,
        data: dict[str, object],
        *,
        event_id: str | None = None,
    ) -> None:
        """`event_id`: the CloudEvents id, where the event names a transition that another
        replica may publish too (transition_id); random otherwise."""
        assert kind in OPS_TYPES, kind
        value = _ENCODER.encode(
            {
                "specversion": "1.0",
                "id": event_id or "op_" + secrets.token_hex(12),
                "source": "switchboard",
                "type": kind,
                "tenantid": tenant_id,
                "time": rfc3339(self._clock()),
                "data": {"subscription_id": sub_id, **data},
            }
        )
        await produce(self._producer, self._topic, "ops", value=value, key=sub_id.encode())
        metrics.OPS_EVENTS.labels(kind).inc()
        log.info("ops_event", type=kind, subscription_id=sub_id)

    def in_background(self, work: Awaitable[None]) -> asyncio.Task[None]:
        """Run `work` until it ends or `close` gives up on it."""
        task = asyncio.ensure_future(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def close(self) -> None:
        """Give background notifications a moment, then drop what is left (it is advisory)."""
        if self._background:
            await asyncio.wait(self._background, timeout=_CLOSE_SECONDS)
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
