"""Fixtures for the MCP server tests: settings under tmp_path, an open service, a gate that
holds the placeholder provider so jobs can be slow or fail on demand."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core import ImageService, Settings, parse_settings
from core.providers.placeholder import PlaceholderImageModel


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings with the database and images under ``tmp_path``; ``sections`` merge in."""
    data: dict[str, Any] = {
        "database": {"path": str(tmp_path / "imagegate.db")},
        "images": {"dir": str(tmp_path / "images")},
        "quota": {"allowance": 10},
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    return parse_settings(data, source="test-config")


def png(size: tuple[int, int] = (96, 64), colour: Any = (200, 30, 30), mode: str = "RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour).save(buf, format="PNG")
    return buf.getvalue()


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
