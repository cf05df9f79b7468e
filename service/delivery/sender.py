"""Sending one prepared request and naming what came of it.

One `aiohttp.ClientSession` for every endpoint: an explicit `ClientTimeout` per endpoint, no
redirects followed, no cookies kept, at most a bounded excerpt of the response read, proxies
only from the settings (never the environment), and names resolved only through the guarded
resolver, which refuses private addresses (`netguard.py`).
"""

from __future__ import annotations

import time
from typing import Final
from urllib.parse import urlsplit

import aiohttp
import structlog

from service.delivery.endpoint import MAX_CONNECT_SECONDS, EndpointSettings
from service.delivery.failures import describe_failure, describe_redirect
from service.delivery.netguard import AddressPolicy, GuardedResolver
from service.delivery.oauth import TokenCache, TokenError
from service.delivery.outcomes import (
    AttemptResult,
    Outcome,
    outcome_for_exception,
    outcome_for_status,
)
from service.delivery.request import Prepared
from service.delivery.success import MAX_CONDITION_BODY

log = structlog.get_logger("switchboard.delivery")

# A token endpoint slower than this is failing, whatever the webhook's own timeout.
TOKEN_TIMEOUT: Final = aiohttp.ClientTimeout(total=10, connect=MAX_CONNECT_SECONDS)


class Sender:
    def __init__(
        self,
        *,
        policy: AddressPolicy,
        max_connections: int,
        body_cap: int,
        egress_proxy: str | None = None,
        dns_cache_seconds: int = 60,
    ) -> None:
        self._policy = policy
        self._max_connections = max_connections
        self._body_cap = body_cap
        # With an egress proxy, names are resolved by the proxy, which must do its own
        # filtering (smokescreen-style); literal addresses are still refused here.
        self._proxy = egress_proxy
        self._dns_cache_seconds = dns_cache_seconds
        self.tokens = TokenCache()
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            resolver=GuardedResolver(
                self._policy,
                exempt=frozenset({urlsplit(self._proxy).hostname or ""} if self._proxy else ()),
            ),
            ttl_dns_cache=self._dns_cache_seconds,
            enable_cleanup_closed=True,
        )
        self._session = aiohttp.ClientSession(
            connector=connector,
            # Proxies come from explicit settings only, never from the pod's environment.
            trust_env=False,
            # One session for every tenant: a cookie an endpoint sets would go with every
            # delivery to its host, for any tenant, and a receiver could grow the jar at will.
            cookie_jar=aiohttp.DummyCookieJar(),
            auto_decompress=True,
            skip_auto_headers=("User-Agent",),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self, settings: EndpointSettings, prepared: Prepared, *, read_limit: int | None = None
    ) -> AttemptResult:
        """One request; every failure becomes a named outcome. `read_limit` reads more of
        the answer than the excerpt kept for the log (a pre-call lookup's answer)."""
        assert self._session is not None, "Sender.start() was not awaited"
        if settings.refusal is not None:
            return settings.refusal
        started = time.perf_counter()
        oauth = settings.oauth
        if oauth is not None:
            try:
                token = await self.tokens.token(
                    self._session, oauth, timeout=TOKEN_TIMEOUT, proxy=self._proxy
                )
            except TokenError as exc:
                return AttemptResult(
                    Outcome.AUTH_ERROR, None, time.perf_counter() - started, str(exc)
                )
            prepared.headers["Authorization"] = "Bearer " + token
        condition = settings.condition
        limit = self._body_cap
        # The answer itself is judged (a JSON key of a success condition, a lookup's answer):
        # all of it, up to the limit, within the timeout. Otherwise the status decides and
        # the body is only an excerpt for the log: whatever came with the status.
        judged = read_limit is not None or (condition is not None and bool(condition.json_path))
        if judged:
            limit = max(limit, read_limit or MAX_CONDITION_BODY)
        try:
            async with self._session.request(
                prepared.method,
                prepared.url,
                data=prepared.body,
                headers=prepared.headers,
                allow_redirects=False,
                timeout=settings.timeout,
                proxy=self._proxy,
            ) as resp:
                # Read a bounded excerpt; the rest of an oversized body is never buffered.
                body = (
                    await read_up_to(resp.content, limit)
                    if judged
                    else (await resp.content.read(limit) if limit else b"")
                )
                status = resp.status
                retry_after = resp.headers.get("Retry-After") if status in (429, 503) else None
                location = resp.headers.get("Location") if 300 <= status < 400 else None
        except Exception as exc:  # every failure becomes a named outcome
            outcome = outcome_for_exception(exc)
            if outcome is None:
                log.exception("delivery_internal_error", subscription_id=settings.sub.id)
                outcome = Outcome.INTERNAL_ERROR
            message = describe_failure(exc, settings.timeout)
            return AttemptResult(outcome, None, time.perf_counter() - started, message)
        duration = time.perf_counter() - started
        if status == 401 and oauth is not None:
            self.tokens.invalidate(oauth)  # revoked early: the next attempt fetches a new one
        outcome, error = outcome_for_status(status), None
        if condition is not None:
            error = condition.failure(status, body)
            if error is None:
                outcome = Outcome.SUCCESS
            elif outcome is Outcome.SUCCESS or condition.accepts_status(status):
                outcome = Outcome.CONDITION_FAILED
            # else: a status the rule does not accept keeps its own class (429, 5xx, ...)
        if outcome is Outcome.REDIRECT:
            error = describe_redirect(status, location)
        excerpt = body if read_limit is not None else body[: self._body_cap]
        return AttemptResult(outcome, status, duration, error, excerpt, retry_after)


async def read_up_to(content: aiohttp.StreamReader, limit: int) -> bytes:
    """The body up to `limit` bytes, or all of it if shorter. `StreamReader.read(n)` returns
    what has arrived so far: for an answer sent in several segments (a server that flushes
    as it writes, a slow link), only its start, which is not valid JSON."""
    chunks: list[bytes] = []
    size = 0
    while size < limit:
        chunk = await content.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)
