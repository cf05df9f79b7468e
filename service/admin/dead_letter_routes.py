"""Admin routes over the dead letters: list them, replay them, recover a subscription.

They answer from the history store (`consumers/dead_letters/store.py`): every dead letter
for the retention, paged by keyset, with no cap; replay is at most once across replicas.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Final, Literal, Protocol

import msgspec
import orjson
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from service.admin.history_access import HistoryAccess
from service.admin.requests import decode_body, page_limit, parse_range, parse_time
from service.admin.responses import ApiError, error_response, json_response
from service.admin.scope import SCOPE, scoped_tenant
from service.dead_letters.model import DeadLetter
from service.events.envelope import rfc3339
from service.history.queries import DeadLetterQuery, parse_cursor
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.api")

# One replay request re-enqueues at most this many; the response says when there are more.
MAX_REPLAY: Final = 10_000
# Replaying waits for the broker to take every record; bounded so the client hears back.
REPLAY_TIMEOUT_SECONDS: Final = 30.0


class Replayer(Protocol):
    async def listing(self, query: DeadLetterQuery) -> list[DeadLetter]: ...
    async def replay(self, letters: Sequence[DeadLetter]) -> tuple[list[str], list[str]]: ...


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ids: list[str] | None = None
    subscription_id: str | None = None
    tenant_id: str | None = None
    since: str | None = None
    until: str | None = None


class DeadLetterRoutes:
    def __init__(
        self,
        access: HistoryAccess,
        store: Replayer | None,
        lookup: Callable[[str], Subscription | None],
        find: Callable[[web.Request], Subscription | None],
    ) -> None:
        self._access = access
        self._store = store
        self._lookup = lookup
        self._find = find

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/dead-letters", self.list_)
        app.router.add_post("/v1/dead-letters/replay", self.replay)
        app.router.add_post("/v1/subscriptions/{id}/recover", self.recover)

    async def list_(self, request: web.Request) -> web.Response:
        tenant = scoped_tenant(request, request.query.get("tenant_id"))
        return json_response(await self.listing(tenant, request.query))

    async def listing(
        self, tenant: str | Literal[False] | None, query: Mapping[str, str]
    ) -> dict[str, object]:
        """One page of dead letters, oldest first, narrowed by `query` (the API's names);
        `tenant` False sees nothing."""
        store = self._replayer()
        limit = page_limit(query)
        since, until = parse_range(query.get("since"), query.get("until"))
        after = None
        if "after" in query:
            after = parse_cursor(query["after"])
            if after is None:
                raise ApiError(400, "invalid_query", "a next_after of this listing", "after")
        replayed = query.get("replayed")
        if replayed not in (None, "true", "false"):
            raise ApiError(400, "invalid_query", "true or false", "replayed")
        if tenant is False:
            return {"data": [], "next_after": None}
        letters = await self._list(store, DeadLetterQuery(
            tenant_id=tenant, subscription_id=query.get("subscription_id"),
            reason=query.get("reason"), replayed=None if replayed is None else replayed == "true",
            since=_utc(since), until=_utc(until), after=after, limit=limit,
        ))  # fmt: skip
        more = len(letters) > limit
        page = letters[:limit]
        return {"data": [_view(dl) for dl in page], "next_after": page[-1].cursor if more else None}

    async def replay(self, request: web.Request) -> web.Response:
        req = decode_body(await request.read(), ReplayRequest)
        if req.ids is None and req.subscription_id is None and req.tenant_id is None:
            return error_response(
                422, "invalid_field", "give ids, a subscription_id or a tenant_id", "ids"
            )
        since, until = (_utc(t) for t in parse_range(req.since, req.until))
        store = self._replayer()
        tenant = scoped_tenant(request, req.tenant_id)
        if tenant is False:
            return json_response({"replayed": [], "skipped": [], "more": False})
        if req.ids is None:
            letters = await self._list(store, DeadLetterQuery(
                tenant_id=tenant, subscription_id=req.subscription_id, since=since, until=until,
                limit=MAX_REPLAY,
            ))  # fmt: skip
            return json_response(await self._replay(store, letters))
        return json_response(await self.replayed_ids(
            request[SCOPE], req.ids, tenant=tenant, subscription_id=req.subscription_id,
            since=since, until=until,
        ))  # fmt: skip

    async def replayed_ids(
        self, scope: str | None, ids: Sequence[str], *, tenant: str | None = None,
        subscription_id: str | None = None, since: datetime | None = None,
        until: datetime | None = None,
    ) -> dict[str, object]:  # fmt: skip
        """Replays dead letters by id. An id asked for by name is answered for: one that is
        unknown (or another tenant's, which answers the same), or outside the other criteria,
        is skipped."""
        store = self._replayer()
        wanted = list(dict.fromkeys(ids))[: MAX_REPLAY + 1]
        found = {dl.id: dl for dl in await self._list(
            store, DeadLetterQuery(ids=wanted, tenant_id=scope, limit=len(wanted))
        )}  # fmt: skip
        unmatched = [{"id": i, "reason": "not_found"} for i in wanted if i not in found]
        letters = []
        for dl in (found[i] for i in wanted if i in found):
            if _matches(dl, tenant, subscription_id, since, until):
                letters.append(dl)
            else:
                unmatched.append({"id": dl.id, "reason": "not_matching"})
        return await self._replay(store, letters, unmatched)

    async def recover(self, request: web.Request) -> web.Response:
        """Everything that failed for one subscription since a time, sent again."""
        self._replayer()
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        since = parse_time(request.query.get("since"), "since")
        if since is None:
            return error_response(400, "invalid_query", "since is required", "since")
        return json_response(await self.recovered(sub, since))

    async def recovered(self, sub: Subscription, since: float) -> dict[str, object]:
        """Replays every dead letter of `sub` since `since` (unix seconds)."""
        store = self._replayer()
        letters = await self._list(
            store, DeadLetterQuery(subscription_id=sub.id, since=_utc(since), limit=MAX_REPLAY)
        )
        return await self._replay(store, letters)

    async def _list(self, store: Replayer, query: DeadLetterQuery) -> list[DeadLetter]:
        async with self._access.query("dead_letters"):
            return await store.listing(query)

    async def _replay(
        self,
        store: Replayer,
        letters: list[DeadLetter],
        unmatched: list[dict[str, str]] | None = None,
    ) -> dict[str, object]:
        # The listing asked for one more than MAX_REPLAY: its presence says there are more.
        more = len(letters) > MAX_REPLAY
        skipped: list[dict[str, str]] = list(unmatched or ())
        ready: list[DeadLetter] = []
        for dl in letters[:MAX_REPLAY]:
            why = self._not_replayable(dl)
            if why is not None:
                skipped.append({"id": dl.id, "reason": why})
            else:
                ready.append(dl)
        try:
            async with asyncio.timeout(REPLAY_TIMEOUT_SECONDS), self._access.query("replay"):
                done, taken = await store.replay(ready)
        except (KafkaError, TimeoutError) as exc:
            log.warning("replay_failed", error=repr(exc))
            raise ApiError(503, "unavailable", "the broker did not take the replay; "
                           "replaying again is safe") from None  # fmt: skip
        skipped.extend({"id": i, "reason": "already_replayed"} for i in taken)
        log.info("dead_letters_replayed", count=len(done), skipped=len(skipped))
        return {"replayed": done, "skipped": skipped, "more": more}

    def _replayer(self) -> Replayer:
        self._access.required()
        assert self._store is not None  # configured with the history store
        return self._store

    def _not_replayable(self, dl: DeadLetter) -> str | None:
        if dl.replayed_at is not None:
            return "already_replayed"
        sub = self._lookup(dl.record.subscription_id)
        if sub is None:
            return "subscription_deleted"
        if not sub.enabled:
            return "subscription_disabled"
        return None


def _matches(
    dl: DeadLetter,
    tenant: str | None,
    subscription_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> bool:
    at = dl.dead_lettered_at
    return (
        (tenant is None or dl.record.event.tenant_id == tenant)
        and (subscription_id is None or dl.record.subscription_id == subscription_id)
        and (since is None or at >= since.timestamp())
        and (until is None or at < until.timestamp())
    )


def _utc(unix: float | None) -> datetime | None:
    return datetime.fromtimestamp(unix, UTC) if unix is not None else None


def _view(dl: DeadLetter) -> dict[str, object]:
    p = dl.record
    error = p.last_error
    return {
        "id": dl.id,
        "subscription_id": p.subscription_id,
        "tenant_id": p.event.tenant_id,
        "reason": p.reason,
        "attempts": p.attempts,
        "first_attempt_at": rfc3339(p.first_attempt_at) if p.first_attempt_at else None,
        "dead_lettered_at": rfc3339(dl.dead_lettered_at),
        "last_error": msgspec.to_builtins(error) if error is not None else None,
        "origin": {"topic": p.origin.topic, "partition": p.origin.partition,
                   "offset": p.origin.offset},
        "replay_of": p.replay_of,
        "replayed_at": rfc3339(dl.replayed_at) if dl.replayed_at else None,
        "event": {
            "id": p.event.id,
            "type": p.event.type,
            "source": p.event.source,
            "time": p.event.time,
            "data": orjson.Fragment(bytes(p.event.data)),
        },
    }  # fmt: skip
