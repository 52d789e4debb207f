"""Alerts without the bot: every long-running service checks ``[alerts]`` in the background
and logs each condition once per day, and a front end's own sink still gets it once."""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from core import Caller, ImageRequest, ImageService, JobFailedError, ProviderError
from tests.conftest import make_settings
from tests.dashboard.conftest import NEBULA_KEY_ENV, NEBULA_MODEL, dashboard_settings
from tests.emulators import create_emulator
from tests.emulators.base import Fault


class _AlertLines(logging.Handler):
    """Collects the service's ``alert:`` log lines; ``seen`` is set at the first."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []
        self.seen = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("alert:"):
            self.lines.append(record.getMessage())
            self.seen.set()


@pytest.fixture
def alert_lines():
    handler = _AlertLines()
    logging.getLogger("imagegate").addHandler(handler)
    yield handler
    logging.getLogger("imagegate").removeHandler(handler)


async def test_a_service_without_the_bot_logs_each_alert_once(
    tmp_path, monkeypatch, alert_lines: _AlertLines
):
    emulator = create_emulator("nebulablock", image_size=(64, 64))
    monkeypatch.setenv(NEBULA_KEY_ENV, emulator.api_key)
    sections = dashboard_settings(tmp_path, alerts={"failure_rate": 0.5, "min_jobs": 2})
    settings = make_settings(tmp_path, **sections)
    request = ImageRequest(prompt="x", model=f"nebula:{NEBULA_MODEL}", size=(64, 64))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as client:
        async with await ImageService.open(settings, http=client, sweeper=False) as one_shot:
            for _ in range(2):  # a CLI run: two failed jobs, no background work, no alert
                emulator.inject(Fault(status=503))
                with pytest.raises((JobFailedError, ProviderError)):
                    await one_shot.generate(Caller.parse("mcp:alice"), request)
        assert alert_lines.lines == []
        # What `imagegate mcp` or `serve` opens without a bot (sweeper defaults to on).
        async with await ImageService.open(settings, http=client) as service:
            async with asyncio.timeout(60):  # checked at start-up, not after an interval
                await alert_lines.seen.wait()
            assert await service.check_alerts("log") == []  # logged today already
            assert len(await service.check_alerts("discord")) == 1  # a bot's sink: its own
        async with await ImageService.open(settings, http=client) as replica:
            assert await replica.check_alerts("log") == []  # a second process: not again
    assert alert_lines.lines == [
        f"alert: model nebula:{NEBULA_MODEL}: 2 of 2 jobs failed in the last hour"
        " (100%; alert above 50%)"
    ]
