"""A webhook receiver on loopback that verifies Standard Webhooks signatures.

Used by the demo (prints each delivery) and importable by tests and the benchmark.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from aiohttp import web
from standardwebhooks import Webhook


@dataclass
class Received:
    path: str
    webhook_id: str
    event_id: str
    event_type: str
    tenant_id: str
    verified: bool


@dataclass
class Receiver:
    secrets: dict[str, str] = field(default_factory=dict)  # path -> whsec_ secret
    received: list[Received] = field(default_factory=list)
    on_receive: Callable[[str, Received], None] | None = None
    status: int = 204

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        return app

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        path = request.match_info["path"]
        secret = self.secrets.get(path)
        verified = False
        if secret is not None:
            try:
                Webhook(secret).verify(body, dict(request.headers))
                verified = True
            except Exception:  # noqa: BLE001 - any failure means "not verified", shown as such
                verified = False
        payload = orjson.loads(body)
        item = Received(
            path=path,
            webhook_id=request.headers.get("webhook-id", ""),
            event_id=payload.get("id", ""),
            event_type=payload.get("type", ""),
            tenant_id=payload.get("tenant_id", ""),
            verified=verified,
        )
        self.received.append(item)
        if self.on_receive is not None:
            self.on_receive(path, item)
        return web.Response(status=self.status)


async def start_site(app: web.Application, port: int = 0) -> tuple[web.AppRunner, int]:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    bound: int = runner.addresses[0][1]
    return runner, bound


async def wait_until(predicate: Callable[[], bool], within: float, interval: float = 0.02) -> bool:
    """Poll a condition with a deadline; True if it came true in time."""
    deadline = asyncio.get_running_loop().time() + within
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(interval)
    return True
