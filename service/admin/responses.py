"""The API's error shape: `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

import orjson
from aiohttp import web


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "field": field}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
