"""Hostile input (issue 8): every case is refused with a typed error and costs nothing.

The cases live in ``bench/soak_hostile.py`` (``make soak`` counts them): SSRF through the MCP
server's public URL fetcher (every private and local address, in every spelling, by name and
by redirect; no connection to a non-public address is ever pinned), decompression bombs,
wrong types, absurd requests, bad masks, path traversal, another user's images, and forged or
reused callback tokens. "Costs nothing" is strict: no credit moves and no hold is taken.
"""

from __future__ import annotations

import base64

import pytest
import pytest_asyncio
from mcp import Client

from bench.soak_hostile import (
    all_cases,
    hostile_context,
    png_header_bomb,
    run_case,
    run_controls,
)
from core import Caller, ImageRequest
from mcp_server.server import build_server

pytestmark = pytest.mark.asyncio(loop_scope="module")
CASES = all_cases()


@pytest_asyncio.fixture(loop_scope="module", scope="module")
async def ctx(tmp_path_factory):
    async with hostile_context(tmp_path_factory.mktemp("hostile")) as context:
        yield context


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
async def test_refused_cleanly(ctx, case):
    result = await run_case(ctx, case)
    assert result.refused, result.describe()


async def test_controls_are_accepted(ctx):
    """The harness is not refusing everything: public URLs and one's own image work."""
    assert await run_controls(ctx) == []


async def test_every_issue_category_is_covered():
    categories = {c.category for c in CASES}
    assert {
        "ssrf-literal", "ssrf-name", "ssrf-redirect", "ssrf-scheme", "image-bomb", "image-type",
        "request", "mask", "path", "other-user", "callback",
    } <= categories  # fmt: skip
    urls = " ".join(c.id for c in CASES if c.ssrf)
    for needle in (
        "127.0.0.1",
        "10.0.0.1",
        "172.16.",
        "192.168.",
        "169.254.169.254",
        "[::1]",
        "[fc00::1]",
        "::ffff:",
        "2130706433",
        "0177.0.0.1",
        "internal.example",
    ):
        assert needle in urls, needle  # fmt: skip


async def test_control_characters_are_removed_not_stored(ctx):
    request = ImageRequest(prompt="a\x00 cat\x1b[2J\u202e\u200b", size=(64, 64))
    result = await ctx.service.generate(ctx.victim, request)
    job = await ctx.service.job(ctx.victim, result.job_id)
    assert job.request["prompt"] == "a cat[2J"


async def test_hostile_values_through_the_mcp_tools_cost_nothing(ctx):
    """End to end: the real MCP client calls the tools with hostile values."""
    server = build_server(ctx.service, fetcher=ctx.fetcher)
    user = Caller(frontend="mcp", user_id=ctx.service.settings.mcp.stdio_user)  # who calls
    before = await ctx.service.quota(user)
    holds = await ctx.service.db.fetchone("SELECT count(*) FROM hold")
    values = [
        "https://169.254.169.254/latest/meta-data/",
        "https://[::ffff:127.0.0.1]/x.png",
        "https://public.example/r?to=https%3A%2F%2F10.0.0.1%2Fx.png",
        "imagegate://images/../../etc/passwd",
        f"imagegate://images/{ctx.victim_image}",
        "file:///etc/passwd",
        base64.b64encode(png_header_bomb()).decode(),
    ]
    requests = [
        {"prompt": "x", "size": "99999x99999"},
        {"prompt": "x", "size": "0x0"},
        {"prompt": "x", "aspect_ratio": "99:1"},
        {"prompt": "x", "n": 1000},
        {"prompt": "\x00\x1b\u202e"},
        {"prompt": "x" * 5000},
        {"prompt": "x", "model": "../../etc/passwd"},
        {"prompt": "x", "seed": -1},
    ]
    async with Client(server) as client:
        for value in values:
            result = await client.call_tool("upscale_image", {"image": value})
            assert result.is_error, value
        for arguments in requests:
            result = await client.call_tool("generate_image", arguments)
            assert result.is_error, arguments
        with pytest.raises(Exception):  # noqa: B017 - any refusal will do; the point is no data
            await client.read_resource("imagegate://images/../../etc/passwd")
    after = await ctx.service.quota(user)
    assert (after.remaining, after.held) == (before.remaining, before.held)
    assert await ctx.service.db.fetchone("SELECT count(*) FROM hold") == holds
    assert ctx.transports.violations == []
