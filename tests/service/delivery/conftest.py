"""The `pool` fixture: a delivery pool with a recording followup, closed after the test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.service.delivery.harness import Harness, make_pool


@pytest.fixture
async def pool() -> AsyncIterator[Harness]:
    p = await make_pool()
    yield p
    await p.close()
