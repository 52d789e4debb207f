"""Fixtures for the MCP server tests: settings under tmp_path, an open service, a gate that
holds the placeholder provider so jobs can be slow or fail on demand."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx2
import pytest
import uvicorn
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from core import ImageService, Settings
from core.providers.placeholder import PlaceholderImageModel
from mcp_server.serve import http_app, mcp_url, require_token
from mcp_server.server import build_server
from tests.conftest import make_settings as base_settings
from tests.conftest import png_bytes as png  # noqa: F401  (imported by the tests)


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """The shared test settings with a small allowance (10), so quota cases run out quickly."""
    quota = {"allowance": 10, **sections.pop("quota", {})}
    return base_settings(tmp_path, quota=quota, **sections)


@pytest.fixture
def settings_factory(tmp_path: Path) -> Callable[..., Settings]:
    return lambda **sections: make_settings(tmp_path, **sections)


@pytest.fixture
async def service(tmp_path: Path) -> AsyncIterator[ImageService]:
    svc = await ImageService.open(make_settings(tmp_path), sweeper=False)
    yield svc
    await svc.aclose()


class Gate:
    """Holds every placeholder call until ``open()``; ``fail`` makes calls raise instead."""

    def __init__(self) -> None:
        self.entered = asyncio.Event()
        self.released = asyncio.Event()
        self.cancelled = 0
        self.fail: Exception | None = None


@pytest.fixture
def gate(monkeypatch: pytest.MonkeyPatch) -> Gate:
    gate = Gate()
    original = PlaceholderImageModel.do_generate

    async def held(self: PlaceholderImageModel, plan: Any, count: int, deadline: float) -> Any:
        gate.entered.set()
        try:
            await gate.released.wait()
        except asyncio.CancelledError:
            gate.cancelled += 1
            raise
        if gate.fail is not None:
            raise gate.fail
        return await original(self, plan, count, deadline)

    monkeypatch.setattr(PlaceholderImageModel, "do_generate", held)
    return gate


@asynccontextmanager
async def running(settings: Settings) -> AsyncIterator[str]:
    """Serve the MCP app on 127.0.0.1 with an OS-chosen port; yields the MCP URL."""
    service = await ImageService.open(settings, sweeper=False)
    stored = await service.has_tokens("mcp")
    server = build_server(service, require_token=require_token(settings, stored_tokens=stored))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    web = uvicorn.Server(
        uvicorn.Config(http_app(server, settings), log_level="error", lifespan="on")
    )
    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(web.serve, [sock])
            with anyio.fail_after(10):
                while not web.started:
                    await anyio.sleep(0.02)
            yield mcp_url(settings, sock.getsockname()[1])
            web.should_exit = True
    finally:
        await server.jobs.aclose()
        await service.aclose()


async def call(url: str, token: str | None, tool: str, args: dict[str, Any]) -> Any:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with httpx2.AsyncClient(headers=headers, timeout=30) as http:
        async with Client(streamable_http_client(url, http_client=http)) as client:
            return await client.call_tool(tool, args)


@pytest.fixture(params=["memory", "http"])
def connect(request: pytest.FixtureRequest) -> Callable[..., Any]:
    """``async with connect(settings, token=None, **client_options) as client``: the ``mcp``
    client against a server over ``settings``, in memory or over streamable HTTP (each test
    runs both ways). ``token``: sent as the bearer token (HTTP only)."""

    @asynccontextmanager
    async def open_client(
        settings: Settings, token: str | None = None, **options: Any
    ) -> AsyncIterator[Client]:
        if request.param == "memory":
            async with Client(build_server(settings), **options) as client:
                yield client
            return
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        async with running(settings) as url, httpx2.AsyncClient(headers=headers) as http:
            transport = streamable_http_client(url, http_client=http)
            async with Client(transport, **options) as client:
                yield client

    return open_client
