"""Reading the history through the API, as a client would, until it shows what a test waits for."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from tests.conftest import RunningService


async def poll(
    svc: RunningService, path: str, until: Callable[[Any], bool], within: float = 15
) -> Any:
    """GET `path` until its JSON satisfies `until`; returns that answer (fails the test if it
    never does)."""
    deadline = asyncio.get_running_loop().time() + within
    body: Any = None
    while True:
        async with svc.http.get(svc.base + path) as resp:
            if resp.status == 200:
                body = await resp.json()
                if until(body):
                    return body
        assert asyncio.get_running_loop().time() < deadline, f"{path}: last answer {body}"
        await asyncio.sleep(0.05)


async def dead_letters(svc: RunningService, query: str = "", within: float = 15,
                       until: Callable[[list[Any]], bool] = bool) -> list[Any]:  # fmt: skip
    body = await poll(
        svc, f"/v1/dead-letters?limit=1000{query}", lambda b: until(b["data"]), within
    )
    letters: list[Any] = body["data"]
    return letters
