"""Tenant API keys: created, listed and deleted by the operator only.

To a tenant key these routes do not exist (404), like everything outside its tenant.
"""

from __future__ import annotations

import asyncio

import structlog
from aiohttp import web

from service.admin.requests import check_tenant_id, decode_body
from service.admin.responses import error_response, json_response
from service.admin.scope import SCOPE
from service.admin.table import WRITE_TIMEOUT_SECONDS, Table
from service.subscriptions.api_keys import ApiKeyCreate, new_api_key

log = structlog.get_logger("switchboard.api")


class ApiKeyRoutes:
    def __init__(self, table: Table) -> None:
        self._table = table

    def add_to(self, app: web.Application) -> None:
        app.router.add_post("/v1/api-keys", self.create_key)
        app.router.add_get("/v1/api-keys", self.list_keys)
        app.router.add_delete("/v1/api-keys/{id}", self.delete_key)

    async def create_key(self, request: web.Request) -> web.Response:
        if request[SCOPE] is not None:
            return error_response(404, "not_found", "no such route")
        req = decode_body(await request.read(), ApiKeyCreate)
        check_tenant_id(req.tenant_id)
        if len(req.name) > 200:
            return error_response(422, "invalid_field", "at most 200 characters", "name")
        record, key = new_api_key(req)
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.put(record)
        log.info("api_key_created", api_key_id=record.id, tenant_id=record.tenant_id)
        # The only response that shows the key.
        return json_response({**record.public(), "key": key}, status=201)

    async def list_keys(self, request: web.Request) -> web.Response:
        if request[SCOPE] is not None:
            return error_response(404, "not_found", "no such route")
        tenant = request.query.get("tenant_id")
        keys = sorted(
            (k for k in self._table.api_keys() if tenant is None or k.tenant_id == tenant),
            key=lambda k: k.id,
        )
        return json_response({"data": [k.public() for k in keys]})

    async def delete_key(self, request: web.Request) -> web.Response:
        key_id = request.match_info["id"]
        known = {k.id for k in self._table.api_keys()}
        if request[SCOPE] is not None or key_id not in known:
            return error_response(404, "not_found", "no such API key")
        async with asyncio.timeout(WRITE_TIMEOUT_SECONDS):
            await self._table.delete(key_id)
        log.info("api_key_deleted", api_key_id=key_id)
        return web.Response(status=204)
