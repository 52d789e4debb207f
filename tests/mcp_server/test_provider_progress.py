"""A backend's own progress (here the AI Horde's queue position) reaches an MCP client as
progress notifications; a backend's absurd numbers (a wait of ``1e999`` s, ``Retry-After:
inf``) are clamped where they are read and never crash a tool call."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from mcp import Client

from core import ImageService
from mcp_server.server import build_server
from tests.emulators import Emulator, Fault, create_emulator

from .conftest import make_settings


@asynccontextmanager
async def horde_client(tmp_path, monkeypatch, emu: Emulator) -> AsyncIterator[Any]:
    """An MCP client over a service whose one model is the Horde emulator's."""
    monkeypatch.setenv("IG_MCP_HORDE_KEY", emu.api_key)
    settings = make_settings(
        tmp_path,
        providers={"horde": {"kind": "horde", "base_url": "http://horde.test",
                             "api_key_env": "IG_MCP_HORDE_KEY", "models": ["stable_diffusion"],
                             "poll_interval_s": 0.05}},
        mcp={"progress_interval_s": 0.05},
    )  # fmt: skip
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emu.app)) as http:
        service = await ImageService.open(settings, http=http, sweeper=False)
        service.orchestrator.base_delay_s = 0.01
        async with service, Client(build_server(service)) as client:
            yield client


async def generate(client: Any, messages: list[str | None]) -> Any:
    async def on_progress(progress: float, total: float | None, message: str | None) -> None:
        messages.append(message)

    return await client.call_tool(
        "generate_image", {"prompt": "a fox", "size": "64x64"}, progress_callback=on_progress
    )


async def test_horde_queue_position_arrives_as_progress_notifications(tmp_path, monkeypatch):
    emu = create_emulator("horde", queue_s=0.8, queue_ahead=3, job_duration_s=0.01)
    messages: list[str | None] = []
    async with horde_client(tmp_path, monkeypatch, emu) as client:
        result = await generate(client, messages)
    assert not result.is_error, result.content
    queued = [m for m in messages if m and "queued at horde, position" in m]
    assert queued and "left" in queued[0]


async def test_a_wait_estimate_of_1e999_seconds_is_shown_as_a_day(tmp_path, monkeypatch):
    emu = create_emulator("horde", job_duration_s=0.3)
    check = '{"done": false, "is_possible": true, "queue_position": 2, "wait_time": 1e999}'
    emu.inject(Fault(body=check, path="/generate/check/"), times=3)
    messages: list[str | None] = []
    async with horde_client(tmp_path, monkeypatch, emu) as client:
        result = await generate(client, messages)
    assert not result.is_error, result.content
    assert any(m and "position 2, about 1440 min left" in m for m in messages), messages


@pytest.mark.parametrize("header", [math.inf, math.nan])
async def test_retry_after_inf_or_nan_is_an_error_result_not_a_crash(tmp_path, monkeypatch, header):
    emu = create_emulator("horde")
    emu.inject(Fault(retry_after=header, path="/generate/async"), times=3)
    async with horde_client(tmp_path, monkeypatch, emu) as client:
        result = await generate(client, [])
        quota = (await client.call_tool("get_quota", {})).structured_content
    assert result.is_error and result.structured_content["error"]["retryable"]
    sent = len([r for r in emu.requests if r.path.endswith("/generate/async")])
    if math.isinf(header):  # a day: too long to wait for, so not retried
        assert result.structured_content["error"]["retry_after_s"] == 86_400 and sent == 1
    else:  # no value: the usual backoff, then the two retries
        assert sent == 3
    assert quota["remaining"] == 10


async def test_model_options_are_listed_checked_and_passed_on(tmp_path, monkeypatch):
    emu = create_emulator("horde", job_duration_s=0.01)
    async with horde_client(tmp_path, monkeypatch, emu) as client:
        listed = (await client.call_tool("list_models", {})).structured_content
        options = listed["models"][0]["options"]
        assert {"steps", "guidance", "sampler", "karras"} <= set(options)
        assert options["steps"]["maximum"] == 200 and options["karras"]["type"] == "boolean"
        args = {"prompt": "a fox", "size": "64x64"}
        refused = [
            await client.call_tool("generate_image", {**args, "options": bad})
            for bad in ({"hires": True}, {"steps": 900}, {"karras": "often"})
        ]
        quota = (await client.call_tool("get_quota", {})).structured_content
        done = await client.call_tool(
            "generate_image", {**args, "options": {"steps": 9, "karras": True}}
        )
    for result, words in zip(refused, ("unknown option", "steps", "karras"), strict=True):
        assert result.is_error and words in result.content[0].text, result.content[0].text
    assert "allowed: guidance, steps, sampler" in refused[0].content[0].text
    assert quota["remaining"] == 10 and quota["held"] == 0  # refused before anything was held
    assert not done.is_error, done.content
    [sent] = [r for r in emu.requests if r.method == "POST" and "generate" in r.path]
    assert sent.json["params"]["steps"] == 9 and sent.json["params"]["karras"] is True
