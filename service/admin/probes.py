"""Probes and metrics: /healthz (alive), /readyz (why not ready), /metrics, /openapi.json."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Final, Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from service.admin.openapi import SPEC
from service.admin.responses import json_response
from service.observability import metrics

# The consumer loops poll every 200 ms; silence this long means one is stuck.
LIVENESS_STALL_SECONDS: Final = 60.0


class LoopState(Protocol):
    @property
    def role(self) -> str: ...
    @property
    def started(self) -> bool: ...
    @property
    def last_tick(self) -> float: ...
    @property
    def joined(self) -> asyncio.Event: ...


class Loaded(Protocol):
    loaded: asyncio.Event


class Probes:
    def __init__(self, table: Loaded, loops: Sequence[LoopState]) -> None:
        self._table = table
        self._loops = loops
        self.shutting_down = False
        # What keeps the service from Kafka, when it is known (a setting to change).
        self.kafka_problem: str | None = None

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/readyz", self.readyz)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_get("/openapi.json", self.openapi)

    def not_ready(self) -> list[str]:
        problems = []
        if self.kafka_problem is not None:
            problems.append(self.kafka_problem)
        if not self._table.loaded.is_set():
            problems.append("subscriptions not loaded")
        for loop in self._loops:
            if not loop.started:
                problems.append(f"{loop.role} consumer not started")
            elif not loop.joined.is_set():
                problems.append(f"{loop.role} consumer has not joined its group")
        if self.shutting_down:
            problems.append("shutting down")
        return problems

    async def healthz(self, _request: web.Request) -> web.Response:
        now = time.monotonic()
        stalled = [
            loop.role
            for loop in self._loops
            if loop.started and now - loop.last_tick > LIVENESS_STALL_SECONDS
        ]
        if stalled:
            return json_response({"status": "stalled", "stalled": stalled}, status=503)
        return json_response({"status": "ok"})

    async def readyz(self, _request: web.Request) -> web.Response:
        problems = self.not_ready()
        ready = not problems
        return json_response(
            {"status": "ready" if ready else "not_ready", "problems": problems},
            status=200 if ready else 503,
        )

    async def metrics(self, _request: web.Request) -> web.Response:
        body = generate_latest(metrics.REGISTRY)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, _request: web.Request) -> web.Response:
        return json_response(SPEC)
