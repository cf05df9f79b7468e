"""Admin routes over the dead letters: list them, replay them, recover a subscription."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from typing import Final, Protocol

import msgspec
import orjson
import structlog
from aiohttp import web
from aiokafka.errors import KafkaError

from service.admin.requests import decode_body, page_limit, parse_range, parse_time
from service.admin.responses import error_response, json_response
from service.admin.scope import SCOPE, visible
from service.dead_letters.model import DeadLetter
from service.events.envelope import rfc3339
from service.subscriptions.model import Subscription

log = structlog.get_logger("switchboard.api")

# One replay request re-enqueues at most this many; the response says when there are more.
MAX_REPLAY: Final = 10_000
# Replaying waits for the broker to take every record; bounded so the client hears back.
REPLAY_TIMEOUT_SECONDS: Final = 30.0


class DeadLetterStore(Protocol):
    def all(self) -> list[DeadLetter]: ...
    def get(self, dl_id: str) -> DeadLetter | None: ...
    async def replay(self, letters: list[DeadLetter]) -> list[DeadLetter]: ...


class ReplayRequest(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ids: list[str] | None = None
    subscription_id: str | None = None
    tenant_id: str | None = None
    since: str | None = None
    until: str | None = None


class DeadLetterRoutes:
    def __init__(
        self,
        store: DeadLetterStore,
        lookup: Callable[[str], Subscription | None],
        find: Callable[[web.Request], Subscription | None],
    ) -> None:
        self._store = store
        self._lookup = lookup
        self._find = find

    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/dead-letters", self.list_)
        app.router.add_post("/v1/dead-letters/replay", self.replay)
        app.router.add_post("/v1/subscriptions/{id}/recover", self.recover)

    async def list_(self, request: web.Request) -> web.Response:
        query = request.query
        limit = page_limit(request)
        if isinstance(limit, web.Response):
            return limit
        window = parse_range(query.get("since"), query.get("until"))
        if isinstance(window, web.Response):
            return window
        since, until = window
        after_seq = 0
        if "after" in query:
            cursor = self._store.get(query["after"])
            if cursor is None:
                return error_response(400, "invalid_query", "unknown or expired cursor", "after")
            after_seq = cursor.seq
        replayed = query.get("replayed")
        if replayed not in (None, "true", "false"):
            return error_response(400, "invalid_query", "true or false", "replayed")
        letters = self._select(
            self._store.all(),
            scope=request[SCOPE],
            tenant_id=query.get("tenant_id"),
            subscription_id=query.get("subscription_id"),
            reason=query.get("reason"),
            since=since,
            until=until,
        )
        page = []
        for dl in letters:
            if dl.seq <= after_seq:
                continue
            if replayed is not None and (dl.replayed_at is not None) != (replayed == "true"):
                continue
            page.append(dl)
            if len(page) > limit:
                break
        more = len(page) > limit
        page = page[:limit]
        return json_response(
            {"data": [_view(dl) for dl in page], "next_after": page[-1].id if more else None}
        )

    async def replay(self, request: web.Request) -> web.Response:
        req = decode_body(await request.read(), ReplayRequest)
        if isinstance(req, web.Response):
            return req
        if req.ids is None and req.subscription_id is None and req.tenant_id is None:
            return error_response(
                422, "invalid_field", "give ids, a subscription_id or a tenant_id", "ids"
            )
        window = parse_range(req.since, req.until)
        if isinstance(window, web.Response):
            return window
        since, until = window
        scope = request[SCOPE]
        # An id asked for by name is answered for: one that is unknown (or another
        # tenant's, which answers the same), or outside the other criteria, is skipped.
        unmatched: list[dict[str, str]] = []
        if req.ids is not None:
            chosen: list[DeadLetter] = []
            for dl_id in dict.fromkeys(req.ids):
                dl = self._store.get(dl_id)
                if dl is None or not visible(dl.record.event.tenant_id, scope):
                    unmatched.append({"id": dl_id, "reason": "not_found"})
                else:
                    chosen.append(dl)
        else:
            chosen = self._store.all()
        letters = self._select(
            chosen,
            scope=scope,
            tenant_id=req.tenant_id,
            subscription_id=req.subscription_id,
            reason=None,
            since=since,
            until=until,
        )
        if req.ids is not None and len(letters) < len(chosen):
            picked = {dl.id for dl in letters}
            unmatched += [
                {"id": dl.id, "reason": "not_matching"} for dl in chosen if dl.id not in picked
            ]
        return await self._replay(letters, unmatched)

    async def recover(self, request: web.Request) -> web.Response:
        """Everything that failed for one subscription since a time, sent again."""
        sub = self._find(request)
        if sub is None:
            return error_response(404, "not_found", "no such subscription")
        since = parse_time(request.query.get("since"), "since")
        if isinstance(since, web.Response):
            return since
        if since is None:
            return error_response(400, "invalid_query", "since is required", "since")
        letters = self._select(
            self._store.all(),
            scope=request[SCOPE],
            tenant_id=None,
            subscription_id=sub.id,
            reason=None,
            since=since,
            until=None,
        )
        return await self._replay(letters)

    async def _replay(
        self, letters: list[DeadLetter], unmatched: list[dict[str, str]] | None = None
    ) -> web.Response:
        skipped: list[dict[str, str]] = list(unmatched or ())
        ready: list[DeadLetter] = []
        for dl in letters:
            why = self._not_replayable(dl)
            if why is not None:
                skipped.append({"id": dl.id, "reason": why})
            else:
                ready.append(dl)
        more = len(ready) > MAX_REPLAY
        try:
            async with asyncio.timeout(REPLAY_TIMEOUT_SECONDS):
                done = await self._store.replay(ready[:MAX_REPLAY])
        except (KafkaError, TimeoutError) as exc:
            log.warning("replay_failed", error=repr(exc))
            return error_response(503, "unavailable", "the broker did not take the replay; "
                                  "replaying again is safe")  # fmt: skip
        log.info("dead_letters_replayed", count=len(done), skipped=len(skipped))
        return json_response({"replayed": [dl.id for dl in done], "skipped": skipped, "more": more})

    def _not_replayable(self, dl: DeadLetter) -> str | None:
        if dl.replayed_at is not None:
            return "already_replayed"
        sub = self._lookup(dl.record.subscription_id)
        if sub is None:
            return "subscription_deleted"
        if not sub.enabled:
            return "subscription_disabled"
        return None

    @staticmethod
    def _select(
        letters: Iterable[DeadLetter],
        *,
        scope: str | None,
        tenant_id: str | None,
        subscription_id: str | None,
        reason: str | None,
        since: float | None,
        until: float | None,
    ) -> list[DeadLetter]:
        out = []
        for dl in letters:
            p = dl.record
            if not visible(p.event.tenant_id, scope):
                continue
            if tenant_id is not None and p.event.tenant_id != tenant_id:
                continue
            if subscription_id is not None and p.subscription_id != subscription_id:
                continue
            if reason is not None and p.reason != reason:
                continue
            if since is not None and dl.dead_lettered_at < since:
                continue
            if until is not None and dl.dead_lettered_at >= until:
                continue
            out.append(dl)
        return out


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
