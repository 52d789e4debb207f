"""Shared fixtures: settings in a temporary folder, an open ImageService, test images."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from core import ImageService, Settings, parse_settings
from tests.pgserver import PostgresServer

# Fails any test whose logs or error messages contain a secret it used (tests/secrets_guard.py).
pytest_plugins = ["tests.secrets_guard"]

#: The variable the ``backend`` fixture's PostgreSQL settings name in ``[database] url_env``.
PG_URL_ENV = "IMAGEGATE_TEST_DATABASE_URL"
BACKENDS = ["sqlite", "postgresql"]


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


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole run (fails, never skips, without binaries)."""
    try:
        server = PostgresServer().start()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    yield server
    server.stop()


@pytest.fixture
def pg_url(pg_server: PostgresServer) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, thrown away after the test."""
    url = pg_server.create_database()
    yield url
    pg_server.drop_database(url)


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A ``[database]`` section, once per backend: SQLite in ``tmp_path``, then a new
    PostgreSQL database whose URL is in ``$IMAGEGATE_TEST_DATABASE_URL``."""
    if request.param == "sqlite":
        return {"path": str(tmp_path / "imagegate.db")}
    monkeypatch.setenv(PG_URL_ENV, request.getfixturevalue("pg_url"))
    return {"path": str(tmp_path / "unused.db"), "url_env": PG_URL_ENV}


class Firehose:
    """A request body of ``chunks`` pieces of ``size`` bytes that counts the pieces taken: a
    server that reads with a size cap stops taking them soon after the cap."""

    def __init__(self, size: int, chunks: int) -> None:
        self.size, self.chunks, self.sent = size, chunks, 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for _ in range(self.chunks):
            self.sent += 1
            yield b"x" * self.size
