"""Streamable HTTP: bearer tokens mapped to users with separate quotas, 401 without a valid
token, DNS-rebinding protection, and the refusal to listen publicly without tokens."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from core import Caller, ConfigError, ImageService
from mcp_server.serve import require_token

from .conftest import Gate, call, make_settings, running

TOKENS = {"ann": "token-for-ann-0123456789", "bob": "token-for-bob-9876543210"}


def clients() -> list[dict[str, Any]]:
    return [
        {"user": user, "token_sha256": hashlib.sha256(token.encode()).hexdigest()}
        for user, token in TOKENS.items()
    ]


async def test_each_token_is_its_own_user_with_its_own_quota(tmp_path):
    settings = make_settings(tmp_path, mcp={"clients": clients()})
    async with running(settings) as url:
        made = await call(url, TOKENS["ann"], "generate_image", {"prompt": "a", "n": 2})
        assert not made.is_error, made.content
        assert made.structured_content["credits_remaining"] == 8
        ann = await call(url, TOKENS["ann"], "get_quota", {})
        bob = await call(url, TOKENS["bob"], "get_quota", {})
        assert (ann.structured_content["user"], ann.structured_content["remaining"]) == (
            "mcp:ann",
            8,
        )
        assert (bob.structured_content["user"], bob.structured_content["remaining"]) == (
            "mcp:bob",
            10,
        )
        uri = made.structured_content["images"][0]["uri"]
        stolen = await call(url, TOKENS["bob"], "upscale_image", {"image": uri})
        assert stolen.structured_content["error"]["code"] == "not_found"


async def test_requests_without_a_valid_token_get_401(tmp_path):
    settings = make_settings(tmp_path, mcp={"clients": clients()})
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    headers = {"Accept": "application/json, text/event-stream"}
    async with running(settings) as url:
        async with httpx.AsyncClient() as http:
            for auth in (None, "Bearer wrong", "Bearer", "Basic abc", f"Bearer {'x' * 600}"):
                sent = {**headers, **({"Authorization": auth} if auth else {})}
                response = await http.post(url, json=body, headers=sent)
                assert response.status_code == 401, auth
                assert response.headers["www-authenticate"].startswith("Bearer")
        with pytest.raises(Exception):  # noqa: B017 - the client surfaces the 401 its own way
            await call(url, None, "get_quota", {})


async def test_dns_rebinding_protection_refuses_foreign_host_headers(tmp_path):
    settings = make_settings(tmp_path)
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}}
    async with running(settings) as url:
        async with httpx.AsyncClient() as http:
            response = await http.post(
                url,
                json=body,
                headers={"Host": "evil.example", "Accept": "application/json, text/event-stream"},
            )
            assert response.status_code in (400, 403, 421)
            response = await http.post(
                url,
                json=body,
                headers={
                    "Origin": "http://evil.example",
                    "Accept": "application/json, text/event-stream",
                },
            )
            assert response.status_code in (400, 403)


async def test_loopback_without_clients_serves_the_stdio_user(tmp_path):
    settings = make_settings(tmp_path, mcp={"stdio_user": "desk"})
    async with running(settings) as url:
        result = await call(url, None, "get_quota", {})
        assert result.structured_content["user"] == "mcp:desk"


def test_no_public_listening_without_clients(tmp_path):
    for host in ("0.0.0.0", "192.168.1.5", "::"):
        with pytest.raises(ConfigError, match="not a loopback address"):
            require_token(make_settings(tmp_path, mcp={"host": host}))
    assert require_token(make_settings(tmp_path, mcp={"host": "0.0.0.0", "clients": clients()}))
    assert not require_token(make_settings(tmp_path, mcp={"host": "localhost"}))
    assert not require_token(make_settings(tmp_path, mcp={"host": "::1"}))


def test_behind_a_proxy_without_clients_it_refuses_to_start(tmp_path):
    # A proxy connects from loopback (nginx even sends the upstream address as Host), so a
    # loopback bind proves nothing once a proxy is configured.
    for sections, key in (
        ({"mcp": {"allowed_hosts": ["images.example.org"]}}, "[mcp] allowed_hosts"),
        ({"callbacks": {"public_url": "https://images.example.org"}}, "[callbacks] public_url"),
    ):
        with pytest.raises(ConfigError) as refused:
            require_token(make_settings(tmp_path, **sections))
        message = refused.value.message
        assert key in message and "no MCP client token" in message and "\n" not in message
        mcp = {**sections.get("mcp", {}), "clients": clients()}
        assert require_token(make_settings(tmp_path, **{**sections, "mcp": mcp}))


async def test_behind_a_proxy_every_request_needs_a_token(tmp_path):
    settings = make_settings(
        tmp_path, mcp={"allowed_hosts": ["images.example.org"], "clients": clients()}
    )
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "get_quota"}}
    accept = {"Accept": "application/json, text/event-stream"}
    async with running(settings) as url:
        port = url.split(":")[2].split("/")[0]
        async with httpx.AsyncClient() as http:
            # What nginx sends by default (Host = the upstream) and what a Host-passing proxy sends.
            for host in (f"127.0.0.1:{port}", "images.example.org"):
                response = await http.post(url, json=body, headers={**accept, "Host": host})
                assert response.status_code == 401, host
        headers = {"Authorization": f"Bearer {TOKENS['ann']}", "Host": "images.example.org"}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http2:
            async with Client(streamable_http_client(url, http_client=http2)) as client:
                made = await client.call_tool("generate_image", {"prompt": "a"})
        assert made.structured_content["credits_remaining"] == 9


async def test_tokenless_http_refuses_what_a_proxy_forwarded(tmp_path):
    async with running(make_settings(tmp_path)) as url:
        for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP", "Via"):
            with pytest.raises(Exception):  # noqa: B017 - the client surfaces the 403 its own way
                async with httpx2.AsyncClient(headers={header: "203.0.113.9"}, timeout=30) as h:
                    async with Client(streamable_http_client(url, http_client=h)) as client:
                        await client.call_tool("generate_image", {"prompt": "free?"})
        async with httpx.AsyncClient() as http:
            response = await http.post(
                url,
                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
                headers={"X-Forwarded-For": "203.0.113.9", "Accept": "application/json"},
            )
        assert response.status_code == 403 and "[[mcp.clients]]" in response.text
        quota = await call(url, None, "get_quota", {})
        assert quota.structured_content["remaining"] == 10


async def test_a_replayed_request_id_in_a_session_is_not_charged_twice(tmp_path):
    headers = {"Accept": "application/json, text/event-stream"}

    async def rpc(http: httpx.AsyncClient, url: str, body: dict[str, Any]) -> Any:
        response = await http.post(url, json=body, headers=headers)
        assert response.status_code in (200, 202), response.text
        if "mcp-session-id" in response.headers:
            headers["mcp-session-id"] = response.headers["mcp-session-id"]
        if response.status_code == 202:
            return None
        if response.headers["content-type"].startswith("application/json"):
            return response.json()
        data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
        return json.loads(data[-1])

    call_body = {
        "jsonrpc": "2.0",
        "id": 7,
        "method": "tools/call",
        "params": {"name": "generate_image", "arguments": {"prompt": "once", "n": 2}},
    }
    async with running(make_settings(tmp_path)) as url, httpx.AsyncClient(timeout=30) as http:
        init = {
            "protocolVersion": "2025-11-25",
            "capabilities": {},
            "clientInfo": {"name": "raw", "version": "1"},
        }
        await rpc(http, url, {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": init})
        headers["mcp-protocol-version"] = "2025-11-25"
        await rpc(http, url, {"jsonrpc": "2.0", "method": "notifications/initialized"})
        first = (await rpc(http, url, call_body))["result"]["structuredContent"]
        again = (await rpc(http, url, call_body))["result"]["structuredContent"]
        assert again["job_id"] == first["job_id"] and again["images"] == first["images"]
        assert any("not charged again" in w for w in again["warnings"])
        quota = await call(url, None, "get_quota", {})
        assert quota.structured_content["remaining"] == 8


async def test_cancelling_over_http_releases_the_hold(tmp_path, gate: Gate):
    settings = make_settings(tmp_path, mcp={"clients": clients()})
    async with running(settings) as url:
        with anyio.move_on_after(10):
            async with anyio.create_task_group() as tg:
                tg.start_soon(call, url, TOKENS["ann"], "generate_image", {"prompt": "x", "n": 2})
                await gate.entered.wait()
                held = await call(url, TOKENS["ann"], "get_quota", {})
                assert held.structured_content["held"] == 2
                tg.cancel_scope.cancel()
        with anyio.fail_after(5):
            while (await call(url, TOKENS["ann"], "get_quota", {})).structured_content["held"]:
                await anyio.sleep(0.05)
        status = (await call(url, TOKENS["ann"], "get_quota", {})).structured_content
        assert status["remaining"] == 10 and gate.cancelled == 1


async def test_tokens_in_the_database_work_at_once_and_stop_when_revoked(tmp_path):
    settings = make_settings(tmp_path, mcp={"clients": clients()})
    admin = Caller(frontend="cli", user_id="ops", is_admin=True)
    async with running(settings) as url:
        async with await ImageService.open(settings, sweeper=False) as cli:  # another process
            token, info = await cli.mint_token(admin, "mcp", "mcp:carol")
            member, _ = await cli.mint_own_token(Caller(frontend="discord", user_id="42"))
        made = await call(url, token, "generate_image", {"prompt": "x", "n": 2})
        assert not made.is_error and made.structured_content["credits_remaining"] == 8
        carol = await call(url, token, "get_quota", {})
        assert carol.structured_content["user"] == "mcp:carol"
        # A Discord member's own token spends their Discord credits.
        wallet = await call(url, member, "get_quota", {})
        assert wallet.structured_content["user"] == "discord:42"
        # The config's tokens keep working beside the database's.
        ann = await call(url, TOKENS["ann"], "get_quota", {})
        assert ann.structured_content["user"] == "mcp:ann"
        async with await ImageService.open(settings, sweeper=False) as cli:
            await cli.revoke_token(admin, "mcp", info.prefix)
            listed = await cli.tokens.get("mcp", info.prefix)
            assert listed is not None and listed.last_used_at and listed.revoked_at
        assert await status_with(url, token) == 401


async def test_database_tokens_alone_put_the_server_in_token_mode(tmp_path):
    settings = make_settings(tmp_path, mcp={"host": "0.0.0.0"})
    with pytest.raises(ConfigError, match="imagegate mcp token USER"):
        require_token(settings)
    async with await ImageService.open(settings, sweeper=False) as cli:
        token, _ = await cli.mint_token(
            Caller(frontend="cli", user_id="ops", is_admin=True), "mcp", "mcp:dave"
        )
        assert require_token(settings, stored_tokens=await cli.has_tokens("mcp"))
    local = make_settings(tmp_path)  # loopback, no config clients: token mode by the database
    async with running(local) as url:
        assert (await call(url, token, "get_quota", {})).structured_content["user"] == "mcp:dave"
        with pytest.raises(Exception):  # noqa: B017 - the 401 surfaces the client's own way
            await call(url, None, "get_quota", {})


async def test_a_tokenless_local_server_serves_tokens_minted_after_it_started(tmp_path):
    settings = make_settings(tmp_path, mcp={"stdio_user": "desk"})
    async with running(settings) as url:
        async with await ImageService.open(settings, sweeper=False) as cli:
            token, _ = await cli.mint_own_token(Caller(frontend="mcp", user_id="erin"))
        assert (await call(url, token, "get_quota", {})).structured_content["user"] == "mcp:erin"
        assert (await call(url, None, "get_quota", {})).structured_content["user"] == "mcp:desk"
        assert await status_with(url, "ig_mcp_AbCd1234_not-a-real-token-at-all") == 401


async def status_with(url: str, token: str) -> int:
    """The HTTP status of a tools/list sent with this bearer token."""
    async with httpx.AsyncClient() as http:
        response = await http.post(
            url,
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list", "params": {}},
            headers={
                "Accept": "application/json, text/event-stream",
                "Authorization": f"Bearer {token}",
            },
        )
    return response.status_code
