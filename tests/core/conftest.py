"""Fixtures shared by the core tests."""

from __future__ import annotations

import pytest

from core import parse_settings
from core.db import open_database
from core.quota import QuotaStore
from tests.core.test_quota import Clock


@pytest.fixture
async def store(backend):
    """A quota store on a fake clock (``store.clock``), on each backend."""
    settings = parse_settings({"database": backend})
    store = QuotaStore(await open_database(settings.database), Clock())
    yield store
    await store.db.close()
