"""Fixtures for the MCP server tests: settings under tmp_path, an open service, a gate that
holds the placeholder provider so jobs can be slow or fail on demand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core import ImageService, Settings
from core.providers.placeholder import PlaceholderImageModel
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
