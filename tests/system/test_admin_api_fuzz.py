"""Schemathesis fuzzes the admin API from its own OpenAPI description: no 5xx, every status
and body as documented, whatever the input."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.admin.openapi import SPEC
from service.admin.server import AdminApi
from service.config import Settings
from tests.conftest import ADMIN_TOKEN, create_schema, drop_schema, service_env
from tools.tansu import free_port

ROOT = Path(__file__).resolve().parents[2]
schema = schemathesis.openapi.from_dict(SPEC)
# Semantic refusals (an https-only policy, a blocked address) are 422s by design, so the
# checks are the ones that hold for any input: no server error, and responses as documented.
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]  # fmt: skip


@pytest.fixture(scope="module")
def base_url(
    kafka_bootstrap: str, postgres_dsn: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    # The history routes answer from a store of their own.
    schema, history_dsn = asyncio.run(create_schema(postgres_dsn))
    # Test sends make real requests: every one goes to a loopback port where nothing
    # listens (as a proxy, which also resolves names), whatever URL the fuzzer saves.
    nowhere = f"http://127.0.0.1:{free_port()}"
    env = {**os.environ, **service_env(kafka_bootstrap, http_port=port, egress_proxy=nowhere,
                                       history_dsn=history_dsn)}  # fmt: skip
    log = tmp_path_factory.mktemp("fuzz") / "service.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "service.cli"], env=env, cwd=ROOT,
                                stdout=out, stderr=out)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, log.read_text()
            try:
                if requests.get(base + "/readyz", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "service not ready"
            time.sleep(0.1)
        # A subscription to find, so that the routes by id do not only ever answer 404.
        requests.post(base + "/v1/subscriptions", timeout=10,
                      headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
                      json={"tenant_id": "fuzz", "name": "n", "url": "https://example.com/h",
                            "event_types": ["*"]}).raise_for_status()  # fmt: skip
        yield base
    finally:
        proc.terminate()
        proc.wait(30)
        asyncio.run(drop_schema(postgres_dsn, schema))


_FRAMING_HEADERS = {"transfer-encoding", "content-length", "connection", "host"}


@schema.parametrize()
@settings(max_examples=40)
def test_admin_api_survives_any_input(case: schemathesis.Case[Any], base_url: str) -> None:
    # Framing headers the fuzzer may invent (a Transfer-Encoding beside the Content-Length the
    # client sets) are refused by the HTTP parser before any route runs, in its own plain
    # text: that is the transport's answer to a broken message, not the API's.
    for name in list(case.headers or {}):
        if name.lower() in _FRAMING_HEADERS:
            del case.headers[name]
    case.call_and_validate(
        base_url=base_url,
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        checks=CHECKS,
        timeout=15,
    )


def test_every_route_is_described_and_documented_with_an_example() -> None:
    """The running app's routes, the OpenAPI description and docs/api.md name the same set."""
    # Only the routing table is needed: nothing here is called.
    nothing: Any = SimpleNamespace(get=lambda _id: None)
    api = AdminApi(table=nothing, dead_letters=nothing, token="t", policy=nothing,
                   loops=(), history=nothing, tester=nothing, ordering=nothing,
                   settings=Settings(admin_token="t" * 16))  # fmt: skip
    served = {
        f"{r.method} {r.resource.canonical}"
        for r in api.app().router.routes()
        if r.resource is not None and r.resource.canonical.startswith("/v1") and r.method != "HEAD"
    }
    described = {
        f"{method.upper()} {path}"
        for path, ops in SPEC["paths"].items()
        for method in ops
        if method != "parameters"
    }
    assert served == described
    doc = (ROOT / "docs" / "api.md").read_text()
    for route in described:
        assert f"### `{route}" in doc, route
