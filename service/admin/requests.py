"""What every admin route reads from a request: its body, its paging, its time range."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Final, TypeVar

import msgspec

from service.admin.responses import ApiError
from service.subscriptions.auth import AUTH_TYPES

DEFAULT_PAGE: Final = 100
MAX_PAGE: Final = 1000

T = TypeVar("T")


def decode_body(body: bytes, typ: type[T], fixed: Mapping[str, str] | None = None) -> T:
    """The request body as `typ`; raises the 400/422 ApiError that says why it is not one.
    `fixed` names fields the body may not carry, with what to do instead."""
    if not body.strip():
        raise ApiError(400, "malformed_json", "the body is empty; send a JSON object")
    try:
        return msgspec.json.decode(body, type=typ)
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, fixed or {}) from None
    except msgspec.DecodeError as exc:
        raise ApiError(400, "malformed_json", f"not valid JSON: {exc}") from None


def check_tenant_id(tenant_id: str) -> None:
    """Raises the 422 for a tenant id that cannot name a tenant."""
    if not tenant_id or len(tenant_id) > 256 or not tenant_id.isprintable():
        raise ApiError(422, "invalid_field", "1..256 printable characters", "tenant_id")


def page_limit(query: Mapping[str, str]) -> int:
    try:
        limit = int(query.get("limit", DEFAULT_PAGE))
    except ValueError:
        raise ApiError(400, "invalid_query", "limit must be an integer", "limit") from None
    if not 1 <= limit <= MAX_PAGE:
        raise ApiError(400, "invalid_query", f"limit must be 1..{MAX_PAGE}", "limit")
    return limit


def parse_time(value: str | None, field: str) -> float | None:
    """An RFC 3339 time (with offset) as unix seconds; None when absent."""
    if value is None:
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        when = None
    if when is None or when.tzinfo is None:
        raise ApiError(400, "invalid_query", "an RFC 3339 time with offset", field)
    return when.timestamp()


def _validation_error(exc: msgspec.ValidationError, fixed: Mapping[str, str]) -> ApiError:
    message, field = split_validation_error(exc)
    if field is not None and field in fixed and message.startswith("Object contains unknown"):
        message = f"{field} cannot be changed: {fixed[field]}"
    return ApiError(422, "invalid_field", _explained(message, field), field)


def split_validation_error(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec's message without its location, and the field it names (dotted), if any."""
    message = str(exc)
    field = None
    if "`$." in message:
        message, _, path = message.partition(" - at `$.")
        field = path.rstrip("`")
    elif message.startswith(("Object missing required field `", "Object contains unknown")):
        field = message.split("`")[1]
    return message, field


def _explained(message: str, field: str | None) -> str:
    """msgspec's message with the accepted values where it does not give them."""
    if message.startswith("Invalid value") and field is not None and field.endswith(".type"):
        # Only tagged unions (auth) have a `type` field: msgspec names the bad tag only.
        return f"{message}; one of {', '.join(AUTH_TYPES)}"
    return message


def parse_range(since: str | None, until: str | None) -> tuple[float | None, float | None]:
    """`since` and `until` (RFC 3339) as unix seconds; raises the 400 naming the bad one."""
    return parse_time(since, "since"), parse_time(until, "until")
