"""The event catalog: every event type with its meaning, its data schema and a sample."""

from __future__ import annotations

from aiohttp import web

from service.admin.responses import error_response, json_response
from service.catalog.entries import BY_TYPE, catalog


class CatalogRoutes:
    def add_to(self, app: web.Application) -> None:
        app.router.add_get("/v1/event-types", self.event_types)
        app.router.add_get("/v1/event-types/{type}", self.event_type)

    async def event_types(self, request: web.Request) -> web.Response:
        group = request.query.get("group")
        entries = [e for e in catalog() if group is None or e.group == group]
        return json_response({"data": [e.describe() for e in entries]})

    async def event_type(self, request: web.Request) -> web.Response:
        entry = BY_TYPE.get(request.match_info["type"])
        if entry is None:
            return error_response(404, "not_found", "no such event type in the catalog")
        return json_response(entry.describe())
