"""OAuth2 client-credentials tokens for endpoints that want them, fetched once and shared.

A token is cached per (token URL, client id, scope, audience, secret) until shortly before
it expires. Concurrent deliveries to an endpoint whose token is missing wait for one fetch,
not one each (a token endpoint is often rate limited harder than the webhook endpoint).
After the endpoint answers 401 the token is dropped, so the next attempt fetches a new one:
a token revoked early does not keep failing until its stated expiry. The token request goes
through the delivery session, so the same address rules (SSRF) apply to the token URL.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Callable
from typing import Final

import aiohttp
import msgspec

from service.observability import metrics
from service.subscriptions.auth import OAuth2Auth

# Refresh this long before the stated expiry, so a token never expires in flight.
REFRESH_MARGIN_SECONDS: Final = 30.0
# A token response without expires_in (it is only RECOMMENDED) is reused this long.
DEFAULT_LIFETIME_SECONDS: Final = 300.0
MAX_TOKEN_RESPONSE: Final = 64 * 1024
MAX_CACHED: Final = 10_000

_Key = tuple[str, str, str, str, str]
_OK: Final = metrics.OAUTH_TOKEN_FETCHES.labels("ok")
_FAILED: Final = metrics.OAUTH_TOKEN_FETCHES.labels("failed")


class TokenError(Exception):
    """No token: the token endpoint refused, failed or answered something unusable."""


class _TokenResponse(msgspec.Struct):
    access_token: str
    token_type: str = "Bearer"  # noqa: S105 - the RFC 6750 scheme name, not a secret
    expires_in: float | None = None


_DECODER: Final = msgspec.json.Decoder(_TokenResponse)


def _key(auth: OAuth2Auth) -> _Key:
    secret = hashlib.sha256(auth.client_secret.encode()).hexdigest()
    return (auth.token_url, auth.client_id, auth.scope or "", auth.audience or "", secret)


class TokenCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[_Key, tuple[str, float]] = {}
        self._fetching: dict[_Key, asyncio.Future[str]] = {}

    def invalidate(self, auth: OAuth2Auth) -> None:
        self._tokens.pop(_key(auth), None)

    async def token(
        self,
        session: aiohttp.ClientSession,
        auth: OAuth2Auth,
        *,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own, per request
        proxy: str | None = None,
    ) -> str:
        key = _key(auth)
        cached = self._tokens.get(key)
        if cached is not None and self._clock() < cached[1]:
            return cached[0]
        waiting = self._fetching.get(key)
        if waiting is not None:
            return await asyncio.shield(waiting)
        future: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._fetching[key] = future
        try:
            token, lifetime = await self._fetch(session, auth, timeout, proxy)
            _OK.inc()
        except TokenError as exc:
            _FAILED.inc()
            future.set_exception(exc)
            future.exception()  # retrieved: a fetch nobody else awaited must not warn
            raise
        except BaseException:
            future.cancel()  # cancelled mid-fetch: whoever waits tries again
            raise
        finally:
            del self._fetching[key]
        if len(self._tokens) >= MAX_CACHED:
            now = self._clock()
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        margin = min(REFRESH_MARGIN_SECONDS, lifetime / 10)
        self._tokens[key] = (token, self._clock() + lifetime - margin)
        future.set_result(token)
        return token

    async def _fetch(
        self,
        session: aiohttp.ClientSession,
        auth: OAuth2Auth,
        timeout: aiohttp.ClientTimeout,  # noqa: ASYNC109 - aiohttp's own, per request
        proxy: str | None,
    ) -> tuple[str, float]:
        form = {"grant_type": "client_credentials"}
        if auth.scope:
            form["scope"] = auth.scope
        if auth.audience:
            form["audience"] = auth.audience
        headers = {"Accept": "application/json"}
        if auth.client_auth == "basic":
            pair = f"{auth.client_id}:{auth.client_secret}".encode()
            headers["Authorization"] = "Basic " + base64.b64encode(pair).decode()
        else:
            form |= {"client_id": auth.client_id, "client_secret": auth.client_secret}
        try:
            async with session.post(
                auth.token_url,
                data=form,
                headers=headers,
                allow_redirects=False,
                timeout=timeout,
                proxy=proxy,
            ) as resp:
                body = await resp.content.read(MAX_TOKEN_RESPONSE)
                status = resp.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise TokenError(f"token endpoint: {type(exc).__name__}: {exc}") from None
        if status != 200:
            raise TokenError(f"token endpoint answered {status}")
        try:
            answer = _DECODER.decode(body)
        except msgspec.DecodeError as exc:
            raise TokenError(f"token endpoint answer: {exc}") from None
        if answer.token_type.lower() != "bearer" or not answer.access_token:
            raise TokenError(f"token endpoint answer: token_type {answer.token_type!r}")
        lifetime = answer.expires_in if answer.expires_in else DEFAULT_LIFETIME_SECONDS
        return answer.access_token, max(1.0, lifetime)
