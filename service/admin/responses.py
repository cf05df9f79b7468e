"""The API's error shape: `{"error": {"code", "message", "field"}}`."""

from __future__ import annotations

import orjson
from aiohttp import web


class ApiError(Exception):
    """A refusal in the API's error shape, raised by the operations the admin API and the
    portal share: the API answers it as JSON, the portal shows its message on the page."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.field = field

    def response(self) -> web.Response:
        return error_response(self.status, self.code, self.message, self.field)


def error_response(status: int, code: str, message: str, field: str | None = None) -> web.Response:
    body = {"error": {"code": code, "message": message, "field": field}}
    return web.Response(status=status, body=orjson.dumps(body), content_type="application/json")


def json_response(data: object, status: int = 200) -> web.Response:
    return web.Response(status=status, body=orjson.dumps(data), content_type="application/json")
