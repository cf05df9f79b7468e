"""What every history route shares: the store, or the 503 that says why there is none, and
the timing of its queries.

Without `SWITCHBOARD_HISTORY_DSN` the service delivers as usual and the history routes answer
503 `history_not_configured`; with a store that is not reachable (yet), 503
`history_unavailable`. Neither is retried by the service: the client asks again.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime

from aiohttp import web

from service.admin.responses import error_response
from service.events.envelope import rfc3339
from service.history.store import STORE_ERRORS, HistoryStore
from service.observability import metrics


class StoreUnavailable(Exception):
    def __init__(self, response: web.Response) -> None:
        super().__init__(response.text)
        self.response = response


class HistoryAccess:
    def __init__(self, store: HistoryStore | None) -> None:
        self.store = store

    def required(self) -> HistoryStore:
        """The store, ready; else raises StoreUnavailable with the 503 to answer."""
        if self.store is None:
            raise StoreUnavailable(error_response(
                503, "history_not_configured",
                "the delivery history needs a PostgreSQL store: set SWITCHBOARD_HISTORY_DSN",
            ))  # fmt: skip
        if not self.store.ready.is_set():
            raise StoreUnavailable(_unavailable())
        return self.store

    @asynccontextmanager
    async def query(self, route: str) -> AsyncIterator[HistoryStore]:
        """The ready store for one route's queries, timed; a store error becomes a 503."""
        store = self.required()
        start = time.perf_counter()
        try:
            yield store
        except STORE_ERRORS as exc:
            store.failed("replay" if route == "replay" else "query", exc)
            raise StoreUnavailable(_unavailable()) from exc
        metrics.HISTORY_QUERY_DURATION.labels(route).observe(time.perf_counter() - start)


def _unavailable() -> web.Response:
    return error_response(503, "history_unavailable",
                          "the history store is not answering; ask again shortly")  # fmt: skip


def stamp(when: datetime | None) -> str | None:
    return rfc3339(when.timestamp()) if when is not None else None
