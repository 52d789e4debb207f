"""Shared fixtures: settings in a temporary folder, an open ImageService, test images."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core import ImageService, Settings, parse_settings

# Fails any test whose logs or error messages contain a secret it used (tests/secrets_guard.py).
pytest_plugins = ["tests.secrets_guard"]


def make_settings(tmp_path: Path, **sections: Any) -> Settings:
    """Settings whose database and images live under ``tmp_path``; ``sections`` merge in."""
    data: dict[str, Any] = {
        "database": {"path": str(tmp_path / "imagegate.db")},
        "images": {"dir": str(tmp_path / "images")},
    }
    for name, value in sections.items():
        data[name] = {**data.get(name, {}), **value} if isinstance(value, dict) else value
    return parse_settings(data, source="test-config")


def png_bytes(
    size: tuple[int, int] = (96, 64), colour: Any = (200, 30, 30), mode: str = "RGB"
) -> bytes:
    """A small solid PNG."""
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
