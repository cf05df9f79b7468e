"""The subscription model: its validation, creation and changes (its fields: fields.py).

A subscription is stored as JSON in the compacted subscriptions topic, keyed by its id.
Unknown fields in stored records are ignored, so a newer replica's records stay readable by
an older one during a rolling upgrade.
"""

from __future__ import annotations

import re
import secrets
import time
from datetime import UTC, datetime, timedelta
from typing import Any, Final
from urllib.parse import urlsplit

import msgspec

from service.delivery.netguard import AddressPolicy, BlockedAddress
from service.delivery.signing import new_secret, secret_key
from service.delivery.success import CompiledCondition, InvalidCondition
from service.delivery.templates import InvalidTemplate, RequestShape
from service.events.envelope import MAX_ID_LENGTH, TYPE_PATTERN, rfc3339
from service.events.paths import InvalidPath, parse
from service.routing.filters import InvalidFilter, compile_filters
from service.subscriptions.auth import (
    MAX_SECRET,
    ApiKeyAuth,
    Auth,
    BasicAuth,
    OAuth2Auth,
    header_name,
    secret_of,
    unmasked,
)
from service.subscriptions.fields import (
    MAX_ATTEMPTS,
    MAX_EVENT_TYPES,
    MAX_HEADER_VALUE,
    MAX_HEADERS,
    MAX_IN_FLIGHT,
    MAX_NAME_LENGTH,
    MAX_RATE,
    MAX_TIMEOUT_SECONDS,
    MAX_URL_LENGTH,
    MAX_WINDOW,
    METHODS,
    Subscription,
    SubscriptionCreate,
    SubscriptionPatch,
    SubscriptionSettings,
)

# The three types are declared in fields.py, and importable from here as they always were.
__all__ = [
    "RESERVED_HEADERS",
    "Health",
    "InvalidSubscription",
    "Subscription",
    "SubscriptionCreate",
    "SubscriptionPatch",
    "apply_patch",
    "disabled",
    "new_subscription",
    "now_rfc3339",
    "rotate_secret",
    "validate",
]

# Set by the service on every request; a custom header may not replace them.
RESERVED_HEADERS: Final = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "content-type", "user-agent"}
)
_HEADER_NAME: Final = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,100}")
_WILDCARD_TYPE: Final = re.compile(r"(?:[a-z0-9_]+\.)+\*")


class Health(msgspec.Struct, frozen=True, kw_only=True):
    """An endpoint failing without a success since `failing_since` (unix seconds)."""

    failing_since: float
    last_error: str | None = None


class InvalidSubscription(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def now_rfc3339() -> str:
    return rfc3339(time.time())


def new_subscription(req: SubscriptionCreate, policy: AddressPolicy) -> Subscription:
    if req.auth is not None:
        try:
            unmasked(req.auth, None)  # nothing saved yet: the mask stands for no secret
        except ValueError as exc:
            raise InvalidSubscription("auth", str(exc)) from None
    if req.tenant_id is None:
        raise InvalidSubscription("tenant_id", "required with the operator token")
    stamp = now_rfc3339()
    settings: dict[str, Any] = {
        name: getattr(req, name) for name in SubscriptionSettings.__struct_fields__
    }
    # As apply_patch does: stored in one form, however the request spelled it.
    settings["method"] = req.method.upper()
    settings["event_types"] = tuple(dict.fromkeys(req.event_types))
    settings["filters"] = tuple(req.filters)
    if req.body_fields is not None:
        settings["body_fields"] = tuple(req.body_fields)
    settings["headers"] = dict(req.headers)
    sub = Subscription(
        **settings,
        id="sub_" + secrets.token_hex(12),
        tenant_id=req.tenant_id,
        secret=new_secret(),
        created_at=stamp,
        updated_at=stamp,
    )
    validate(sub, policy)
    return sub


def apply_patch(sub: Subscription, patch: msgspec.Struct, policy: AddressPolicy) -> Subscription:
    """`sub` with the fields that `patch` (a SubscriptionPatch) sets."""
    changes = {
        name: getattr(patch, name)
        for name in patch.__struct_fields__
        if getattr(patch, name) is not msgspec.UNSET
    }
    if "event_types" in changes:
        changes["event_types"] = tuple(dict.fromkeys(changes["event_types"]))
    if "method" in changes:
        changes["method"] = changes["method"].upper()
    if "filters" in changes:
        changes["filters"] = tuple(changes["filters"] or ())
    if "headers" in changes and changes["headers"] is None:
        changes["headers"] = {}
    if changes.get("auth") is not None:
        # A settings page sends back what it read: the mask means "keep the saved secret".
        try:
            changes["auth"] = unmasked(changes["auth"], sub.auth)
        except ValueError as exc:
            raise InvalidSubscription("auth", str(exc)) from None
    if changes.get("body_fields") is not None:
        changes["body_fields"] = tuple(changes["body_fields"])
    if changes.get("enabled"):
        # Enabling is the customer saying the endpoint is fixed: the service's reason goes.
        changes["disabled_reason"] = None
        changes["disabled_at"] = None
    updated = msgspec.structs.replace(sub, **changes, updated_at=now_rfc3339())
    validate(updated, policy)
    return updated


def disabled(sub: Subscription, reason: str) -> Subscription:
    """The subscription disabled by the service, saying why and when."""
    stamp = now_rfc3339()
    return msgspec.structs.replace(
        sub, enabled=False, disabled_reason=reason, disabled_at=stamp, updated_at=stamp
    )


def rotate_secret(sub: Subscription, grace_seconds: int) -> Subscription:
    """A new secret; the current one keeps signing for `grace_seconds` (Standard Webhooks
    receivers accept any of the space-separated signatures). An older previous is dropped."""
    now = datetime.now(UTC)
    expires = (now + timedelta(seconds=grace_seconds)).isoformat(timespec="seconds")
    return msgspec.structs.replace(
        sub,
        secret=new_secret(),
        previous_secret=sub.secret if grace_seconds > 0 else None,
        previous_secret_expires_at=expires.replace("+00:00", "Z") if grace_seconds > 0 else None,
        updated_at=now_rfc3339(),
    )


def validate(sub: Subscription, policy: AddressPolicy) -> None:
    """Raise InvalidSubscription naming the first field that cannot work."""
    if not sub.tenant_id or len(sub.tenant_id) > MAX_ID_LENGTH or not sub.tenant_id.isprintable():
        raise InvalidSubscription("tenant_id", f"1..{MAX_ID_LENGTH} printable characters")
    if not sub.name or len(sub.name) > MAX_NAME_LENGTH:
        raise InvalidSubscription("name", f"1..{MAX_NAME_LENGTH} characters")
    _validate_url(sub.url, policy)
    if sub.method not in METHODS:
        raise InvalidSubscription("method", f"one of {', '.join(METHODS)}")
    _validate_event_types(sub.event_types)
    _validate_headers(sub.headers)
    _validate_shaping(sub, policy)
    if sub.rate_limit is not None:
        if not 0 < sub.rate_limit.per_second <= MAX_RATE:
            raise InvalidSubscription("rate_limit.per_second", f"must be in (0, {MAX_RATE}]")
        if sub.rate_limit.burst is not None and not 1 <= sub.rate_limit.burst <= MAX_RATE:
            raise InvalidSubscription("rate_limit.burst", f"must be in [1, {MAX_RATE}]")
    if not 1 <= sub.max_in_flight <= MAX_IN_FLIGHT:
        raise InvalidSubscription("max_in_flight", f"must be in [1, {MAX_IN_FLIGHT}]")
    if sub.max_attempts is not None and not 1 <= sub.max_attempts <= MAX_ATTEMPTS:
        raise InvalidSubscription("max_attempts", f"must be in [1, {MAX_ATTEMPTS}]")
    if sub.retry_window_seconds is not None and not 0 < sub.retry_window_seconds <= MAX_WINDOW:
        raise InvalidSubscription("retry_window_seconds", f"must be in (0, {MAX_WINDOW:g}]")
    if not 0 < sub.timeout_seconds <= MAX_TIMEOUT_SECONDS:
        raise InvalidSubscription("timeout_seconds", f"must be in (0, {MAX_TIMEOUT_SECONDS:g}]")
    try:
        secret_key(sub.secret)
    except ValueError as exc:
        raise InvalidSubscription("secret", str(exc)) from None


def _validate_url(url: str, policy: AddressPolicy) -> None:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidSubscription("url", f"at most {MAX_URL_LENGTH} characters")
    if any(c.isspace() for c in url):
        raise InvalidSubscription(
            "url", f"{url[:100]!r} contains whitespace; a URL has none (percent-encode it)"
        )
    if not url.isprintable():
        raise InvalidSubscription("url", "contains a control character")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise InvalidSubscription("url", f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise InvalidSubscription("url", "scheme must be https or http")
    if not parts.hostname:
        raise InvalidSubscription("url", "a host is required")
    if parts.username is not None or parts.password is not None:
        raise InvalidSubscription("url", "credentials in the URL are not allowed; use headers")
    if parts.fragment:
        raise InvalidSubscription("url", "a fragment is never sent; remove it")
    if port == 0:
        raise InvalidSubscription("url", "port 0 is not a destination")
    try:
        policy.check_url(url)
    except BlockedAddress as exc:
        raise InvalidSubscription("url", str(exc)) from None


def _validate_event_types(types: tuple[str, ...]) -> None:
    if not types:
        raise InvalidSubscription("event_types", "at least one event type or pattern")
    if len(types) > MAX_EVENT_TYPES:
        raise InvalidSubscription("event_types", f"at most {MAX_EVENT_TYPES}")
    for pattern in types:
        if pattern == "*" or _WILDCARD_TYPE.fullmatch(pattern) or TYPE_PATTERN.fullmatch(pattern):
            continue
        raise InvalidSubscription(
            "event_types", f"{pattern!r}: an exact type (call.ended), a prefix (call.*) or *"
        )


def _validate_shaping(sub: Subscription, policy: AddressPolicy) -> None:
    """Filters, templates, auth and success conditions: compiled here, so that what is saved
    is what can run."""
    try:
        compile_filters(sub.filters)
    except InvalidFilter as exc:
        raise InvalidSubscription("filters", str(exc)) from None
    if sub.ordering is not None:
        try:
            parse(sub.ordering.key)
        except InvalidPath as exc:
            raise InvalidSubscription("ordering.key", str(exc)) from None
    try:
        RequestShape(method=sub.method, body_template=sub.body_template,
                     body_fields=sub.body_fields, headers=sub.headers)  # fmt: skip
    except InvalidTemplate as exc:
        field, _, message = str(exc).partition(": ")
        raise InvalidSubscription(field.split(".")[0].split("[")[0], message) from None
    if sub.success is not None:
        try:
            CompiledCondition(sub.success)
        except InvalidCondition as exc:
            raise InvalidSubscription("success", str(exc)) from None
    if sub.auth is not None:
        _validate_auth(sub.auth, sub.headers, policy)


def _validate_auth(auth: Auth, headers: dict[str, str], policy: AddressPolicy) -> None:
    secret = secret_of(auth)
    if not secret or len(secret) > MAX_SECRET or any(c in secret for c in "\r\n\x00"):
        raise InvalidSubscription("auth", f"the secret is 1..{MAX_SECRET} characters, one line")
    name = header_name(auth)
    if any(h.lower() == name.lower() for h in headers):
        raise InvalidSubscription("headers", f"{name!r} is set by auth; remove one of them")
    match auth:
        case ApiKeyAuth():
            lowered = auth.header.lower()
            if (
                not _HEADER_NAME.fullmatch(auth.header)
                or lowered in RESERVED_HEADERS
                or (lowered.startswith("webhook-"))
            ):
                raise InvalidSubscription("auth.header", f"{auth.header!r} cannot carry a key")
        case BasicAuth():
            if ":" in auth.username or not auth.username.isprintable() or not auth.username:
                raise InvalidSubscription("auth.username", "1+ printable characters, no colon")
        case OAuth2Auth():
            _validate_oauth(auth, policy)


def _validate_oauth(auth: OAuth2Auth, policy: AddressPolicy) -> None:
    try:
        _validate_url(auth.token_url, policy)
    except InvalidSubscription as exc:
        raise InvalidSubscription("auth.token_url", exc.message) from None
    if not auth.client_id or len(auth.client_id) > MAX_SECRET:
        raise InvalidSubscription("auth.client_id", f"1..{MAX_SECRET} characters")
    if auth.client_auth not in ("basic", "body"):
        raise InvalidSubscription("auth.client_auth", "basic or body")
    for extra in (auth.scope, auth.audience):
        if extra is not None and (len(extra) > 1000 or not extra.isprintable()):
            raise InvalidSubscription("auth", "scope and audience: at most 1000 printable chars")


def _validate_headers(headers: dict[str, str]) -> None:
    if len(headers) > MAX_HEADERS:
        raise InvalidSubscription("headers", f"at most {MAX_HEADERS}")
    for name, value in headers.items():
        if not _HEADER_NAME.fullmatch(name):
            raise InvalidSubscription("headers", f"{name!r} is not a valid header name")
        lowered = name.lower()
        if lowered in RESERVED_HEADERS or lowered.startswith("webhook-"):
            raise InvalidSubscription("headers", f"{name!r} is set by the service")
        if len(value) > MAX_HEADER_VALUE or any(c in value for c in "\r\n\x00"):
            raise InvalidSubscription(
                "headers", f"{name!r}: at most {MAX_HEADER_VALUE} characters, no CR, LF or NUL"
            )
