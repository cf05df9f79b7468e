"""The endpoint form: its fields to the API's subscription JSON, and a subscription back to
the form's values. Nothing is validated here: the JSON goes through the same decoding and
validation as a POST or PATCH of the admin API, whose error names the field to point at."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

import orjson

from service.admin.responses import ApiError
from service.subscriptions.auth import MASK

# The form's auth fields per auth type, each with the API field it fills.
AUTH_FIELDS: Final = {
    "api_key": (("auth_header", "header"), ("auth_key", "key")),
    "basic": (("auth_username", "username"), ("auth_password", "password")),
    "bearer": (("auth_token", "token"),),
    "oauth2_client_credentials": (
        ("auth_token_url", "token_url"),
        ("auth_client_id", "client_id"),
        ("auth_client_secret", "client_secret"),
        ("auth_scope", "scope"),
    ),
}


def _text(form: Mapping[str, Any], name: str) -> str:
    return str(form.get(name, "")).strip()


def _json(form: Mapping[str, Any], name: str, field: str) -> Any:
    text = _text(form, name)
    if not text:
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_field", f"not valid JSON: {exc}", field) from None


def _number(form: Mapping[str, Any], name: str, field: str) -> float | None:
    text = _text(form, name)
    if not text:
        return None
    try:
        return float(text)
    except ValueError:
        raise ApiError(422, "invalid_field", "a number", field) from None


def _lines(form: Mapping[str, Any], name: str) -> list[str]:
    return [line.strip() for line in _text(form, name).splitlines() if line.strip()]


def subscription_json(form: Mapping[str, Any], event_types: list[str]) -> dict[str, Any]:
    """The subscription as the admin API takes it, from the form's fields."""
    out: dict[str, Any] = {
        "name": _text(form, "name"),
        "url": _text(form, "url"),
        "method": _text(form, "method") or "POST",
        "event_types": event_types + _lines(form, "event_patterns"),
        "filters": _json(form, "filters", "filters") or [],
        "strict_schema": form.get("strict_schema") == "on",
        "body_template": _json(form, "body_template", "body_template"),
        "body_fields": _lines(form, "body_fields") or None,
        "headers": _headers(form),
        "auth": _auth(form),
        "success": _success(form),
        "rate_limit": None,
        "max_attempts": None,
    }
    timeout = _number(form, "timeout_seconds", "timeout_seconds")
    if timeout is not None:
        out["timeout_seconds"] = timeout
    attempts = _number(form, "max_attempts", "max_attempts")
    if attempts is not None:
        out["max_attempts"] = int(attempts)
    rate = _number(form, "rate_per_second", "rate_limit.per_second")
    if rate is not None:
        out["rate_limit"] = {"per_second": rate}
    return out


def _headers(form: Mapping[str, Any]) -> dict[str, str]:
    headers = {}
    for line in _lines(form, "headers"):
        name, sep, value = line.partition(":")
        if not sep:
            raise ApiError(422, "invalid_field", f"{line!r}: one `Name: value` per line",
                           "headers")  # fmt: skip
        headers[name.strip()] = value.strip()
    return headers


def _auth(form: Mapping[str, Any]) -> dict[str, Any] | None:
    kind = _text(form, "auth_type")
    if kind not in AUTH_FIELDS:
        return None
    auth: dict[str, Any] = {"type": kind}
    for name, field in AUTH_FIELDS[kind]:
        value = _text(form, name)
        if value:
            auth[field] = value
    return auth


def _success(form: Mapping[str, Any]) -> dict[str, Any] | None:
    codes = _text(form, "success_status_codes")
    path = _text(form, "success_json_path")
    if not codes and not path:
        return None
    try:
        status_codes = [int(c) for c in codes.replace(",", " ").split()]
    except ValueError:
        raise ApiError(422, "invalid_field", "status codes such as 200, 201",
                       "success.status_codes") from None  # fmt: skip
    out: dict[str, Any] = {"status_codes": status_codes}
    if path:
        out["json_path"] = path
        value = _json(form, "success_json_value", "success.json_value")
        out["json_value"] = True if value is None else value
    return out


def form_values(view: Mapping[str, Any]) -> dict[str, str]:
    """A subscription as the API shows it (secrets masked), as the form's field values."""
    auth = view.get("auth") or {}
    success = view.get("success") or {}
    rate = view.get("rate_limit") or {}
    values = {
        "name": view["name"],
        "url": view["url"],
        "method": view["method"],
        "event_patterns": "\n".join(t for t in view["event_types"] if "*" in t),
        "filters": orjson.dumps(view["filters"]).decode() if view["filters"] else "",
        "strict_schema": "on" if view["strict_schema"] else "",
        "body_template": _dumped(view.get("body_template")),
        "body_fields": "\n".join(view.get("body_fields") or ()),
        "headers": "\n".join(f"{k}: {v}" for k, v in (view.get("headers") or {}).items()),
        "auth_type": auth.get("type", ""),
        "success_status_codes": ", ".join(str(c) for c in success.get("status_codes", ())),
        "success_json_path": success.get("json_path") or "",
        "success_json_value": _dumped(success.get("json_value")) if success.get("json_path")
        else "",
        "timeout_seconds": f"{view['timeout_seconds']:g}",
        "max_attempts": str(view["max_attempts"] or ""),
        "rate_per_second": f"{rate['per_second']:g}" if rate else "",
    }  # fmt: skip
    for name, field in AUTH_FIELDS.get(str(auth.get("type")), ()):
        values[name] = str(auth.get(field) or "")
    return values


def _dumped(value: Any) -> str:
    return "" if value is None else orjson.dumps(value, option=orjson.OPT_INDENT_2).decode()


__all__ = ["AUTH_FIELDS", "MASK", "form_values", "subscription_json"]
