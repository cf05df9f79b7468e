"""Sending: outcome classes, bounded reads, redirects, TLS and proxies, on loopback."""

from __future__ import annotations

import asyncio
import gzip
import ssl
from urllib.parse import urlsplit

import aiohttp
import pytest
import trustme
from aiohttp import web

from service.delivery.outcomes import Outcome
from tests.service.delivery.harness import (
    Harness,
    Recorder,
    StartServer,
    make_event,
    make_pool,
    make_sub,
)
from tools.tansu import free_port


async def test_redirects_are_not_followed(pool: Harness, http_server: StartServer) -> None:
    rec = Recorder([web.Response(status=302, headers={"Location": "/elsewhere"})])
    base = await http_server(rec.app())
    _, result = await pool.attempt(make_event(), make_sub(base + "/start"))
    assert result.outcome is Outcome.REDIRECT
    assert result.status == 302
    assert [p for p, _, _ in rec.requests] == ["/start"]
    # The log and the dead letter say where it pointed, so the URL can be fixed.
    assert result.error is not None
    assert "redirect (302) to /elsewhere" in result.error


async def test_response_body_is_capped_after_decompression(
    pool: Harness, http_server: StartServer
) -> None:
    big = b"x" * 5_000_000
    rec = Recorder(
        [
            web.Response(body=big),
            web.Response(body=gzip.compress(big), headers={"Content-Encoding": "gzip"}),
        ]
    )
    base = await http_server(rec.app())
    sub = make_sub(base + "/big")
    for _ in range(2):
        _, result = await pool.attempt(make_event(), sub)
        assert result.ok
        assert result.body_excerpt == b"x" * 64


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.SUCCESS),
        (204, Outcome.SUCCESS),
        (301, Outcome.REDIRECT),
        (400, Outcome.CLIENT_ERROR),
        (408, Outcome.REQUEST_TIMEOUT),
        (410, Outcome.CLIENT_ERROR),
        (429, Outcome.RATE_LIMITED),
        (500, Outcome.SERVER_ERROR),
        (503, Outcome.SERVER_ERROR),
    ],
)
async def test_status_classes(
    pool: Harness, http_server: StartServer, status: int, outcome: Outcome
) -> None:
    base = await http_server(Recorder([web.Response(status=status)]).app())
    _, result = await pool.attempt(make_event(), make_sub(base + "/s"))
    assert (result.outcome, result.status) == (outcome, status)


async def test_timeout(pool: Harness, http_server: StartServer) -> None:
    release = asyncio.Event()

    async def hang(_request: web.Request) -> web.Response:
        await release.wait()
        return web.Response()

    app = web.Application()
    app.router.add_post("/slow", hang)
    base = await http_server(app)
    try:
        _, result = await pool.attempt(make_event(), make_sub(base + "/slow", timeout_seconds=0.3))
        assert result.outcome is Outcome.TIMEOUT
        assert result.status is None
        assert result.error == "no response within 0.3 s"
    finally:
        release.set()


async def test_connection_refused(pool: Harness) -> None:
    port = free_port()
    _, result = await pool.attempt(make_event(), make_sub(f"http://127.0.0.1:{port}/nobody"))
    assert result.outcome is Outcome.CONNECT_ERROR
    assert result.error == f"connection refused by 127.0.0.1:{port}"


async def test_garbage_response_is_invalid_response(pool: Harness) -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(65536)
        writer.write(b"NOT HTTP AT ALL\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(garbage, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        _, result = await pool.attempt(make_event(), make_sub(f"http://127.0.0.1:{port}/"))
        assert result.outcome in {Outcome.INVALID_RESPONSE, Outcome.DISCONNECTED}
    finally:
        server.close()
        await server.wait_closed()


async def test_private_targets_are_blocked_before_connecting(http_server: StartServer) -> None:
    rec = Recorder()
    base = await http_server(rec.app())
    port = base.rsplit(":", 1)[1]
    pool = await make_pool(allow_private=False)
    try:
        for url in (f"http://127.0.0.1:{port}/x", f"http://localhost:{port}/x"):
            _, result = await pool.attempt(make_event(), make_sub(url))
            assert result.outcome is Outcome.BLOCKED_ADDRESS, url
        assert rec.requests == []
    finally:
        await pool.close()


async def test_certificates_are_always_verified(pool: Harness) -> None:
    ca = trustme.CA()  # a CA made in the test: nothing on this machine trusts it
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    rec = Recorder()
    runner = web.AppRunner(rec.app())
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_ctx)
    await site.start()
    port = runner.addresses[0][1]
    try:
        url = f"https://127.0.0.1:{port}/hook"
        # Control: a client that trusts the test CA gets through, so the server works.
        client_ctx = ssl.create_default_context()
        ca.configure_trust(client_ctx)
        async with aiohttp.ClientSession() as http, http.post(url, ssl=client_ctx) as resp:
            assert resp.status == 200
        _, result = await pool.attempt(make_event(), make_sub(url))
        assert result.outcome is Outcome.TLS_ERROR
        assert result.error is not None
        assert result.error.startswith(f"the TLS certificate of 127.0.0.1:{port} is not trusted")
        assert len(rec.requests) == 1  # only the control's request arrived
    finally:
        await runner.cleanup()


async def test_a_redirect_to_loopback_is_not_followed(
    pool: Harness, http_server: StartServer
) -> None:
    inside = Recorder()
    inside_base = await http_server(inside.app())
    rec = Recorder([web.Response(status=307, headers={"Location": inside_base + "/admin"})])
    base = await http_server(rec.app())
    _, result = await pool.attempt(make_event(), make_sub(base + "/hook"))
    assert result.outcome is Outcome.REDIRECT
    assert inside.requests == []


class RecordingProxy:
    """A plain forward proxy on loopback: records each request line, relays the bytes."""

    def __init__(self) -> None:
        self.request_lines: list[bytes] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        line = head.split(b"\r\n", 1)[0]
        self.request_lines.append(line)
        target = urlsplit(line.split(b" ")[1].decode())
        # The proxy resolves names; this one knows a single made-up name, the test receiver.
        host = "127.0.0.1" if target.hostname == "receiver.example.test" else target.hostname
        up_reader, up_writer = await asyncio.open_connection(host, target.port)
        up_writer.write(head)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))


async def test_deliveries_go_through_the_configured_egress_proxy_only(
    http_server: StartServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = Recorder()
    base = await http_server(rec.app())
    # Proxy variables in the environment are ignored: this one leads nowhere.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{free_port()}")
    direct = await make_pool()
    try:
        assert (await direct.attempt(make_event(), make_sub(base + "/direct")))[1].ok
    finally:
        await direct.close()
    proxy = RecordingProxy()
    server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
    proxy_url = f"http://localhost:{server.sockets[0].getsockname()[1]}"
    # The proxy is on loopback and the policy refuses private addresses: the operator's
    # proxy is exempt, the customer's destinations are not.
    pool = await make_pool(allow_private=False, egress_proxy=proxy_url)
    port = base.rsplit(":", 1)[1]
    try:
        # A name is resolved by the proxy, not here: the proxy must do the filtering.
        via_url = f"http://receiver.example.test:{port}/via-proxy"
        _, via = await pool.attempt(make_event(), make_sub(via_url))
        assert via.ok
        assert proxy.request_lines == [f"POST {via_url} HTTP/1.1".encode()]
        # A literal private address is refused before anything is sent, proxy or not.
        _, blocked = await pool.attempt(make_event(), make_sub(base + "/literal"))
        assert blocked.outcome is Outcome.BLOCKED_ADDRESS
        assert len(proxy.request_lines) == 1
    finally:
        await pool.close()
        server.close()
        await server.wait_closed()
    assert [p for p, _, _ in rec.requests] == ["/direct", "/via-proxy"]


def _answer_in_pieces(pieces: list[bytes], pause: float) -> web.Application:
    """A receiver that writes its answer in several writes, as a server that streams or
    flushes does: the body reaches the client in several segments."""

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(
            status=200, headers={"Content-Type": "application/json",
                                 "Content-Length": str(sum(map(len, pieces)))},
        )  # fmt: skip
        await response.prepare(request)
        for piece in pieces:
            await response.write(piece)
            await asyncio.sleep(pause)
        await response.write_eof()
        return response

    app = web.Application()
    app.router.add_post("/{path:.*}", handle)
    return app


async def test_a_success_condition_reads_the_whole_answer_sent_in_pieces(
    pool: Harness, http_server: StartServer
) -> None:
    base = await http_server(_answer_in_pieces([b'{"result": {"acc', b'epted": true}}'], 0.05))
    sub = make_sub(base + "/c", success={"json_path": "result.accepted", "json_value": True})
    _, result = await pool.attempt(make_event(), sub)
    assert result.outcome is Outcome.SUCCESS, result.error


async def test_a_lookup_answer_sent_in_pieces_is_read_whole(
    pool: Harness, http_server: StartServer
) -> None:
    answer = b'{"name": "Jane Doe", "vip": true}'
    base = await http_server(_answer_in_pieces([answer[:10], answer[10:20], answer[20:]], 0.05))
    _, result = await pool.attempt(make_event(), make_sub(base + "/who"), read_limit=64 * 1024)
    assert result.ok
    assert result.body_excerpt == answer


async def test_an_answer_trickled_past_the_timeout_is_a_timeout_when_it_is_judged(
    pool: Harness, http_server: StartServer
) -> None:
    pieces = [b'{"result": ', b'{"accepted": ', b"true}}"]
    base = await http_server(_answer_in_pieces(pieces, 0.6))
    sub = make_sub(base + "/c", success={"json_path": "result.accepted", "json_value": True},
                   timeout_seconds=1)  # fmt: skip
    _, result = await pool.attempt(make_event(), sub)
    assert result.outcome is Outcome.TIMEOUT


async def test_cookies_a_receiver_sets_are_never_sent_back(
    pool: Harness, http_server: StartServer
) -> None:
    """One session serves every tenant: a cookie kept from one endpoint's answer would go
    with other deliveries to its host, whoever they are for, and a receiver could fill the
    jar without bound."""
    set_cookie = {"Set-Cookie": "session=tenant-a-secret; Path=/"}
    rec = Recorder([web.Response(status=200, headers=set_cookie), web.Response(status=200)])
    base = await http_server(rec.app())
    # A name, not an address: cookies of an IP address's answers are refused anyway.
    by_name = base.replace("127.0.0.1", "localhost")
    for path in ("/tenant-a", "/tenant-b"):
        _, result = await pool.attempt(make_event(), make_sub(by_name + path))
        assert result.ok
    assert [p for p, _, _ in rec.requests] == ["/tenant-a", "/tenant-b"]
    assert "Cookie" not in rec.requests[1][1]
