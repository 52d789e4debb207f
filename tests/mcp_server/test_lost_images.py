"""A recorded image whose file is missing or damaged is never served over MCP: not as a
resource, not inline in get_job; the agent is told it is lost."""

from __future__ import annotations

import pytest
from mcp import Client, MCPError

from core import Caller, ImageService
from mcp_server.server import build_server

from .conftest import make_settings


async def test_lost_images_are_refused_as_resources_and_left_out_of_get_job(tmp_path):
    settings = make_settings(tmp_path)
    async with Client(build_server(settings)) as client:
        made = await client.call_tool("generate_image", {"prompt": "a fox", "n": 2})
    out = made.structured_content
    cut_uri, kept_uri = (i["uri"] for i in out["images"])
    async with await ImageService.open(settings, sweeper=False) as service:
        caller = Caller(frontend="mcp", user_id=settings.mcp.stdio_user)
        stored, data = await service.image(caller, cut_uri.rsplit("/", 1)[1])
    stored.path.write_bytes(data[:100])  # as a power cut can leave it

    async with Client(build_server(settings)) as client:  # a new process: start-up check
        with pytest.raises(MCPError, match="is lost .*truncated"):
            await client.read_resource(cut_uri)
        assert (await client.read_resource(kept_uri)).contents[0].blob
        job = await client.call_tool("get_job", {"job_id": out["job_id"], "wait_s": 0})
        assert not job.is_error
        assert [b.type for b in job.content].count("image") == 1  # only the intact one
        assert any("is lost" in w for w in job.structured_content["warnings"])
