"""What one HTTP attempt came to: a named class for every status and every aiohttp failure."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from enum import StrEnum

import aiohttp

from service.delivery.netguard import BlockedAddress


class Outcome(StrEnum):
    SUCCESS = "success"
    REDIRECT = "redirect"  # 3xx: redirects are never followed
    CLIENT_ERROR = "client_error"  # 4xx other than 408 and 429
    REQUEST_TIMEOUT = "request_timeout"  # 408
    RATE_LIMITED = "rate_limited"  # 429
    SERVER_ERROR = "server_error"  # 5xx
    TIMEOUT = "timeout"  # no complete response within the subscription's timeout
    DNS_ERROR = "dns_error"
    CONNECT_ERROR = "connect_error"  # refused, unreachable
    TLS_ERROR = "tls_error"  # handshake or certificate failure
    DISCONNECTED = "disconnected"  # connection dropped mid-request
    INVALID_RESPONSE = "invalid_response"  # not parseable HTTP, broken body encoding
    CONDITION_FAILED = "condition_failed"  # a response the subscription's success rule refuses
    AUTH_ERROR = "auth_error"  # no OAuth2 token: the token endpoint refused or failed
    BLOCKED_ADDRESS = "blocked_address"  # destination on a network deliveries may not reach
    CIRCUIT_OPEN = "circuit_open"  # not sent: the endpoint's circuit is open; counts as failed
    INTERNAL_ERROR = "internal_error"  # a bug on our side; logged with its traceback


@dataclass(frozen=True, slots=True)
class AttemptResult:
    outcome: Outcome
    status: int | None
    duration: float
    error: str | None = None
    body_excerpt: bytes = b""
    retry_after: str | None = None  # the header, on 429 and 503 only

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.SUCCESS


def outcome_for_status(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome.SUCCESS
    if status == 408:
        return Outcome.REQUEST_TIMEOUT
    if status == 429:
        return Outcome.RATE_LIMITED
    if 300 <= status < 400:
        return Outcome.REDIRECT
    if 400 <= status < 500:
        return Outcome.CLIENT_ERROR
    if 500 <= status < 600:
        return Outcome.SERVER_ERROR
    return Outcome.INVALID_RESPONSE  # 1xx or out of range as a final status


def outcome_for_exception(exc: BaseException) -> Outcome | None:
    """The class of a failed attempt, or None for an exception that is not a delivery failure.

    Order matters: aiohttp's TLS errors are connector errors, and its timeouts are both
    connection errors and TimeoutError.
    """
    match exc:
        case BlockedAddress():
            return Outcome.BLOCKED_ADDRESS
        case aiohttp.ClientSSLError():
            return Outcome.TLS_ERROR
        case aiohttp.ClientConnectorDNSError():
            return Outcome.DNS_ERROR
        case aiohttp.ClientConnectorError():
            return Outcome.CONNECT_ERROR
        case TimeoutError() | asyncio.TimeoutError():
            return Outcome.TIMEOUT
        case aiohttp.ServerDisconnectedError() | aiohttp.ClientOSError():
            return Outcome.DISCONNECTED
        case aiohttp.ClientPayloadError() | aiohttp.ClientResponseError():
            return Outcome.INVALID_RESPONSE
        case aiohttp.ClientError():
            return Outcome.CONNECT_ERROR
    return None
