"""A record finished by a task: the handlers' way to wait for the network without blocking."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any

import structlog

from consumers.engine.contract import Token
from service.observability import metrics

log = structlog.get_logger("switchboard.consumer")


def finish_when_done(token: Token, work: Coroutine[Any, Any, None], role: str) -> None:
    """Run `work` for the record; the record is done when the work returns.

    Cancelled work (the record abandoned) leaves the record unfinished, to be read again. Work
    that raises is a bug: it is logged with the record's coordinates and counted, and the
    record is finished anyway, because a record that never finishes stalls its partition.
    """
    task = asyncio.create_task(work)
    token.attach(task)

    def done(t: asyncio.Task[None]) -> None:
        if t.cancelled():
            return
        if (exc := t.exception()) is not None:
            metrics.HANDLER_ERRORS.labels(role).inc()
            log.error("record_failed", consumer=role, topic=token.tp.topic,
                      partition=token.tp.partition, offset=token.offset,
                      error=repr(exc))  # fmt: skip
        token.done()

    task.add_done_callback(done)
