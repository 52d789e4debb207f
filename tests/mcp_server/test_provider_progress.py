"""A backend's own progress (here the AI Horde's queue position) reaches an MCP client as
progress notifications."""

from __future__ import annotations

import httpx
from mcp import Client

from core import ImageService
from mcp_server.server import build_server
from tests.emulators import create_emulator

from .conftest import make_settings


async def test_horde_queue_position_arrives_as_progress_notifications(tmp_path, monkeypatch):
    emu = create_emulator("horde", queue_s=0.8, queue_ahead=3, job_duration_s=0.01)
    monkeypatch.setenv("IG_MCP_HORDE_KEY", emu.api_key)
    settings = make_settings(
        tmp_path,
        providers={"horde": {"kind": "horde", "base_url": "http://horde.test",
                             "api_key_env": "IG_MCP_HORDE_KEY", "models": ["stable_diffusion"],
                             "poll_interval_s": 0.05}},
        mcp={"progress_interval_s": 0.05},
    )  # fmt: skip
    messages: list[str | None] = []

    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.app)) as http:
        service = await ImageService.open(settings, http=http, sweeper=False)
        async with service, Client(build_server(service)) as client:
            result = await client.call_tool(
                "generate_image", {"prompt": "a fox", "size": "64x64"},
                progress_callback=on_progress,
            )  # fmt: skip
    assert not result.is_error, result.content
    queued = [m for m in messages if m and "queued at horde, position" in m]
    assert queued and "left" in queued[0]
