"""Dashboard fixtures: a history of jobs seeded through the real service with a movable clock,
the real HTTP app (``mcp_server.serve.http_app``) served on this event loop, and headless
Chromium (Debian's ``chromium`` + ``chromium-driver``; never a downloaded browser)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from core import Caller, ImageRequest, ImageService, JobFailedError, ProviderError, Settings
from mcp_server.serve import http_app, require_token
from mcp_server.server import build_server
from tests.conftest import make_settings
from tests.emulators import create_emulator
from tests.emulators.base import Fault

DAY = 86_400.0
OPS = Caller(frontend="cli", user_id="ops", is_admin=True)
NEBULA_MODEL = "black-forest-labs/FLUX.1-schnell"
NEBULA_KEY_ENV = "IG_DASH_NEBULA_KEY"
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
# (user, model, days ago, fails): the history every dashboard test starts from.
HISTORY = [
    (user, model, ago, fails)
    for ago in range(9, -1, -1)
    for user, model, fails in (
        ("discord:111", "studio:hd", False),
        ("discord:111", "placeholder:default", False),
        ("mcp:alice", f"nebula:{NEBULA_MODEL}", ago % 3 == 0),
        ("cli:bob", "placeholder:default", False),
    )
    if not (user == "cli:bob" and ago % 2)
]


class Clock:
    """Wall time shifted by ``offset`` seconds: seeding moves it back, tests bring it home."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


@dataclass
class Seeded:
    service: ImageService
    settings: Settings
    clock: Clock
    emulator: Any
    config_path: Path
    # What the service answered while seeding, to compare the page with.
    charged: dict[str, int] = field(default_factory=lambda: defaultdict(int))  # per user
    by_model: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    jobs: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    failed: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    job_ids: list[str] = field(default_factory=list)


def dashboard_settings(tmp_path: Path, **extra: Any) -> dict[str, Any]:
    """Settings sections: two placeholder providers and a NebulaBlock emulator."""
    return {
        "providers": {
            "placeholder": {"kind": "placeholder", "models": ["default"]},
            "studio": {"kind": "placeholder", "models": ["hd"]},
            "nebula": {
                "kind": "nebulablock",
                "base_url": "http://nebulablock.test/api/v1",
                "api_key_env": NEBULA_KEY_ENV,
                "models": [NEBULA_MODEL],
                "timeout_s": 5,
            },
        },
        "pricing": {"default": 1, "models": {"studio:hd": 3, f"nebula:{NEBULA_MODEL}": 2}},
        "quota": {"allowance": 1000},
        "defaults": {"max_retries": 0, "job_deadline_s": 60},
        **extra,
    }


def write_config(tmp_path: Path, settings: Settings) -> Path:
    """The same settings as a TOML file, for the CLI (``imagegate report``)."""
    path = tmp_path / "config.toml"
    lines = [
        f'[database]\npath = "{settings.database.path}"',
        f'[images]\ndir = "{settings.images.dir}"',
        '[providers.placeholder]\nkind = "placeholder"\nmodels = ["default"]',
        '[providers.studio]\nkind = "placeholder"\nmodels = ["hd"]',
        f'[providers.nebula]\nkind = "nebulablock"\nbase_url = "http://nebulablock.test/api/v1"'
        f'\napi_key_env = "{NEBULA_KEY_ENV}"\nmodels = ["{NEBULA_MODEL}"]',
        f'[pricing]\ndefault = 1\nmodels = {{"studio:hd" = 3, "nebula:{NEBULA_MODEL}" = 2}}',
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


async def seed(seeded: Seeded) -> None:
    """Run ``HISTORY`` through the service, one day at a time, snapshotting balances daily."""
    service, clock = seeded.service, seeded.clock
    for user, model, ago, fails in HISTORY:
        clock.offset = -ago * DAY - 3600  # an hour before now, ``ago`` days back
        if fails:
            seeded.emulator.inject(Fault(status=503))
        caller = Caller.parse(user)
        request = ImageRequest(prompt=f"seed {user} {ago}", model=model, size=(64, 64))
        seeded.jobs[user] += 1
        try:
            result = await service.generate(caller, request)
        except (JobFailedError, ProviderError):
            seeded.failed[user] += 1
            continue
        seeded.charged[user] += result.credits_charged
        seeded.by_model[model] += result.credits_charged
        seeded.job_ids.append(result.job_id)
        await service.provider_runways(OPS)  # a balance snapshot a day: the runway's history
    clock.offset = 0.0


@pytest.fixture
async def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Seeded]:
    emulator = create_emulator("nebulablock", image_size=(64, 64), credits=0.5)
    monkeypatch.setenv(NEBULA_KEY_ENV, emulator.api_key)
    settings = make_settings(tmp_path, **dashboard_settings(tmp_path))
    clock = Clock()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=emulator.app)) as client:
        service = await ImageService.open(settings, http=client, sweeper=False, clock=clock)
        try:
            state = Seeded(service, settings, clock, emulator, write_config(tmp_path, settings))
            await seed(state)
            yield state
        finally:
            await service.aclose()


@contextlib.asynccontextmanager
async def serving(service: ImageService) -> AsyncIterator[str]:
    """The real HTTP app (MCP + /admin) on 127.0.0.1 in this event loop; yields its root URL."""
    settings = service.settings
    server = build_server(service, require_token=require_token(settings))
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    web = uvicorn.Server(
        uvicorn.Config(
            http_app(server, settings, service), log_level="error", lifespan="on", access_log=False
        )
    )
    task = asyncio.create_task(web.serve([sock]))
    try:
        while not web.started:
            if task.done():
                task.result()
            await asyncio.sleep(0.01)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        web.should_exit = True
        await task
        await server.jobs.aclose()


def browser_available() -> bool:
    return os.access(CHROMIUM, os.X_OK) and os.access(CHROMEDRIVER, os.X_OK)


@contextlib.contextmanager
def chromium(profile: Path) -> Iterator[Any]:
    """Headless Chromium from the Debian packages, with a fresh profile in ``profile``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
        "--window-size=1280,900",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the browser tests put their screenshots (printed, for a person to look at)."""
    folder = Path(os.environ.get("IMAGEGATE_SCREENSHOTS") or tmp_path_factory.mktemp("dashboard"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"dashboard screenshots: {folder}")
    return folder
