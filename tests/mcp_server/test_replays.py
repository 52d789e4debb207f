"""Replays over streamable HTTP, on both protocol eras: a call sent again is served its first
result and charged once; different calls that share a JSON-RPC request id are never taken for
one another (docs/mcp.md, Replays)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from mcp_server.server import IDEMPOTENCY_KEY

from .conftest import call, make_settings, running
from .test_http import TOKENS, clients
from .test_server import quota
from .test_spend import User, priced

ARGS = {"prompt": "once", "n": 2, "return_image": "none"}
ERAS = ["2026-07-28", "legacy"]  # the stateless protocol, and 2025-11-25's sessions


async def generate(
    url: str, user: str, mode: str, key: str | None = None, args: dict[str, Any] = ARGS
) -> Any:
    """generate_image from a client of its own (a new session on the legacy protocol)."""
    headers = {"Authorization": f"Bearer {TOKENS[user]}"}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http), mode=mode) as client:
            meta = {IDEMPOTENCY_KEY: key} if key is not None else None
            return await client.call_tool("generate_image", args, meta=meta)


async def remaining(url: str, user: str) -> int:
    return (await call(url, TOKENS[user], "get_quota", {})).structured_content["remaining"]


@pytest.mark.parametrize("mode", ERAS)
async def test_a_call_sent_again_with_its_key_is_served_once(tmp_path, mode):
    async with running(make_settings(tmp_path, mcp={"clients": clients()})) as url:
        first = (await generate(url, "ann", mode, "call-1")).structured_content
        again = await generate(url, "ann", mode, "call-1")
        assert not again.is_error, again.content
        out = again.structured_content
        assert (out["job_id"], out["images"]) == (first["job_id"], first["images"])
        assert any("not charged again" in w for w in out["warnings"])
        assert await remaining(url, "ann") == 8
        # Another user's call with the same key is theirs; a new call reusing a key is refused.
        bobs = (await generate(url, "bob", mode, "call-1")).structured_content
        assert bobs["job_id"] != first["job_id"] and await remaining(url, "bob") == 8
        reused = await generate(url, "ann", mode, "call-1", {**ARGS, "prompt": "twice"})
        assert reused.is_error and reused.structured_content["error"]["code"] == "invalid_input"
        assert "Nothing was charged" in reused.content[0].text
        assert await remaining(url, "ann") == 8


@pytest.mark.parametrize("mode", ERAS)
async def test_calls_sharing_a_request_id_without_a_key_are_each_served(tmp_path, mode):
    """Every client numbers its requests from 0: two clients' first calls have the same id
    (and here the same token and arguments) and are still two calls."""
    async with running(make_settings(tmp_path, mcp={"clients": clients()})) as url:
        one = (await generate(url, "ann", mode)).structured_content
        two = (await generate(url, "ann", mode)).structured_content
        assert one["job_id"] != two["job_id"] and one["images"] != two["images"]
        assert await remaining(url, "ann") == 6


async def test_the_same_post_sent_again_on_2026_07_28_is_served_once(tmp_path):
    """The very same request sent again (same id, token and body), as a client retrying
    after a lost answer would; with its key, it is the same call."""
    body = {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {
            "name": "generate_image",
            "arguments": ARGS,
            "_meta": {
                "io.modelcontextprotocol/protocolVersion": "2026-07-28",
                "io.modelcontextprotocol/clientCapabilities": {},
                IDEMPOTENCY_KEY: "3f1c7a52-retry-me",
            },
        },
    }
    headers = {
        "Authorization": f"Bearer {TOKENS['ann']}",
        "Accept": "application/json, text/event-stream",
        "MCP-Protocol-Version": "2026-07-28",
        "Mcp-Method": "tools/call",
        "Mcp-Name": "generate_image",
    }
    async with running(make_settings(tmp_path, mcp={"clients": clients()})) as url:
        async with httpx.AsyncClient(timeout=30) as http:
            answers = [await http.post(url, json=body, headers=headers) for _ in range(2)]
        results = [_result(a)["structuredContent"] for a in answers]
        assert results[0]["job_id"] == results[1]["job_id"]
        assert results[0]["images"] == results[1]["images"]
        assert await remaining(url, "ann") == 8


async def test_a_malformed_key_is_refused_at_no_cost(tmp_path):
    async with running(make_settings(tmp_path, mcp={"clients": clients()})) as url:
        for key in ("", "x" * 201, "new\nline"):
            refused = await generate(url, "ann", "2026-07-28", key)
            assert refused.is_error and IDEMPOTENCY_KEY in refused.content[0].text, key
        assert await remaining(url, "ann") == 10


def _result(response: httpx.Response) -> dict[str, Any]:
    assert response.status_code == 200, response.text
    if response.headers["content-type"].startswith("application/json"):
        return response.json()["result"]
    data = [line[5:] for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])["result"]


@pytest.mark.parametrize("mode", ["auto", "legacy"])
async def test_a_call_approved_by_the_user_and_sent_again_is_charged_once(tmp_path, connect, mode):
    """On 2026-07-28 the question comes back as a result and the client calls again: the key
    rides every round, so the job is still one."""
    answer = {"also_allow": 0, "minutes": 60}
    user = User(answer, answer)
    args = {"prompt": "a red fox", "n": 2, "return_image": "none"}
    async with connect(priced(tmp_path, confirm_over=3), mode=mode, elicitation_callback=user) as c:
        first = await c.call_tool("generate_image", args, meta={IDEMPOTENCY_KEY: "fox-1"})
        again = await c.call_tool("generate_image", args, meta={IDEMPOTENCY_KEY: "fox-1"})
        assert not again.is_error, again.content
        assert again.structured_content["job_id"] == first.structured_content["job_id"]
        assert (await quota(c))["remaining"] == 10 - 4
