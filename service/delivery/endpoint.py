"""A subscription's delivery settings, compiled once per version of the subscription.

Everything each request needs and that does not depend on the event: the signing keys, the
request shape, the success rule, the static headers, the timeout, the OAuth2 client. A
record written to the table around the API may hold settings that cannot work; they do not
raise here, they become `refusal`: the result every attempt then has, with the reason.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import aiohttp

from service import __version__
from service.delivery.netguard import AddressPolicy, BlockedAddress
from service.delivery.outcomes import AttemptResult, Outcome
from service.delivery.signing import secret_key
from service.delivery.success import CompiledCondition, InvalidCondition
from service.delivery.templates import InvalidTemplate, RequestShape
from service.subscriptions.auth import OAuth2Auth, header_name, static_header
from service.subscriptions.model import Subscription

USER_AGENT: Final = f"switchboard/{__version__}"
# Connecting should take a round trip or two; a receiver that cannot accept within this
# is down, whatever its overall timeout says.
MAX_CONNECT_SECONDS: Final = 5.0


def client_timeout(total: float) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=total, connect=min(total, MAX_CONNECT_SECONDS))


class EndpointSettings:
    __slots__ = (
        "condition",
        "headers",
        "key",
        "oauth",
        "previous_key",
        "previous_until",
        "refusal",
        "secret_headers",
        "shape",
        "sub",
        "timeout",
    )

    def __init__(
        self, sub: Subscription, policy: AddressPolicy, *, deadline: float | None = None
    ) -> None:
        """`deadline` cuts the subscription's timeout (a pre-call lookup's caller waits)."""
        self.sub = sub
        unusable: str | None = None
        self.previous_key = b""
        self.previous_until = 0.0
        try:
            self.key = secret_key(sub.secret)
            if sub.previous_secret and sub.previous_secret_expires_at:
                self.previous_key = secret_key(sub.previous_secret)
                self.previous_until = datetime.fromisoformat(
                    sub.previous_secret_expires_at
                ).timestamp()
        except ValueError as exc:
            self.key = b""
            unusable = f"unusable secret: {exc}"
        # The default shape stands if the subscription's cannot compile.
        self.shape = RequestShape(method=sub.method)
        self.condition: CompiledCondition | None = None
        try:
            self.shape = RequestShape(method=sub.method, body_template=sub.body_template,
                                      body_fields=sub.body_fields, headers=sub.headers)  # fmt: skip
            if sub.success is not None:
                self.condition = CompiledCondition(sub.success)
        except (InvalidTemplate, InvalidCondition) as exc:
            unusable = unusable or f"unusable request settings: {exc}"
        # Templated header values are rendered per event and added over these.
        self.headers = {**sub.headers, "user-agent": USER_AGENT}
        if not self.shape.in_query:
            self.headers["content-type"] = "application/json"
        self.oauth = sub.auth if isinstance(sub.auth, OAuth2Auth) else None
        self.secret_headers: tuple[str, ...] = ()
        if sub.auth is not None:
            self.secret_headers = (header_name(sub.auth),)
            if (pair := static_header(sub.auth)) is not None:
                self.headers[pair[0]] = pair[1]
        total = sub.timeout_seconds if deadline is None else min(deadline, sub.timeout_seconds)
        self.timeout = client_timeout(total)
        self.refusal: AttemptResult | None = None
        if unusable is not None:
            self.refusal = AttemptResult(Outcome.INTERNAL_ERROR, None, 0.0, unusable)
            return
        # aiohttp never asks the resolver about an IP literal, so literals are judged here.
        try:
            policy.check_url(sub.url)
        except BlockedAddress as exc:
            self.refusal = AttemptResult(Outcome.BLOCKED_ADDRESS, None, 0.0, str(exc))
        except ValueError as exc:  # urlsplit on a malformed URL
            self.refusal = AttemptResult(Outcome.INTERNAL_ERROR, None, 0.0, f"unusable URL: {exc}")
