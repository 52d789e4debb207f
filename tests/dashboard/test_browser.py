"""The dashboard in a real browser: sign in, read the charts and tables, open a thumbnail, and
compare every figure with the ledger the service keeps. Screenshots at desktop and phone
widths, light and dark, go to the folder the ``screenshots`` fixture prints."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from core import Caller, ImageRequest
from tests.emulators.base import Fault

from .conftest import OPS, Seeded, browser_available, chromium, serving

pytestmark = pytest.mark.skipif(
    not browser_available(), reason="needs Debian's chromium and chromium-driver (.ci/run)"
)
ROOT = Path(__file__).resolve().parents[2]


async def ledger_charged(seeded: Seeded) -> dict[str, int]:
    """Credits charged per user, summed from each user's ledger ('capture' entries)."""
    out = {}
    for user in seeded.jobs:
        entries = await seeded.service.history(OPS, Caller.parse(user), limit=1000)
        out[user] = sum(-e.d_held for e in entries if e.kind == "capture")
    return out


def report_json(seeded: Seeded, days: int) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-m", "core.cli", "--config", str(seeded.config_path), "report",
         "--days", str(days), "--json"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    )  # fmt: skip
    return json.loads(out.stdout)


def read_overview(driver: Any) -> dict[str, Any]:
    """What the overview page shows, read from the DOM."""
    from selenium.webdriver.common.by import By

    chart = driver.find_element(By.ID, "credits-chart")
    bars: dict[str, int] = {}
    for rect in chart.find_elements(By.CSS_SELECTOR, "rect[data-series]"):
        series = rect.get_attribute("data-series")
        bars[series] = bars.get(series, 0) + int(rect.get_attribute("data-value"))
    legend = {
        li.get_attribute("data-model"): int(li.get_attribute("data-credits"))
        for li in driver.find_elements(By.CSS_SELECTOR, "#credits-legend li")
    }
    users = {
        row.get_attribute("data-user"): (
            int(row.find_element(By.CSS_SELECTOR, ".credits").text),
            int(row.find_element(By.CSS_SELECTOR, ".jobs").text),
            int(row.find_element(By.CSS_SELECTOR, ".refunds").text),
        )
        for row in driver.find_elements(By.CSS_SELECTOR, "#top-users tbody tr")
    }
    return {
        "chart_total": int(chart.get_attribute("data-total")),
        "bars": bars,
        "legend": legend,
        "users": users,
        "total": int(driver.find_element(By.ID, "total-credits").text),
        "jobs": int(driver.find_element(By.ID, "total-jobs").text),
        "in_flight": int(driver.find_element(By.ID, "in-flight-count").text),
    }


def click_to(driver: Any, element: Any, landmark: str) -> None:
    """Click ``element`` and wait for the page it leads to (the one with id ``landmark``): a
    click returns before the browser has left the page (read at once, the sign-in form was
    still there under load)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    element.click()
    WebDriverWait(driver, 30).until(expected_conditions.staleness_of(element))
    WebDriverWait(driver, 30).until(
        expected_conditions.presence_of_element_located((By.ID, landmark))
    )


def loaded_width(driver: Any, image: Any) -> int:
    """The natural width of an ``<img>`` once the browser has finished loading it."""
    from selenium.webdriver.support.wait import WebDriverWait

    done = "return arguments[0].complete && arguments[0].naturalWidth"
    driver.execute_script("arguments[0].loading = 'eager'", image)
    return WebDriverWait(driver, 20).until(lambda d: d.execute_script(done, image))


def shoot(driver: Any, folder: Path, name: str, *, phone: bool, dark: bool) -> Path:
    """A full-page screenshot at a phone (390 px) or desktop (1280 px) width."""
    width, height = (390, 844) if phone else (1280, 900)
    driver.execute_cdp_cmd(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark" if dark else "light"}]},
    )
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": phone},
    )
    full = driver.execute_script("return document.documentElement.scrollHeight")
    assert driver.execute_script("return document.documentElement.scrollWidth") <= width + 1
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": min(full, 4000), "deviceScaleFactor": 1, "mobile": phone},
    )
    path = folder / f"{name}-{'phone' if phone else 'desktop'}-{'dark' if dark else 'light'}.png"
    driver.save_screenshot(str(path))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
    return path


async def test_signed_in_pages_match_the_ledger(seeded: Seeded, tmp_path: Path, screenshots):
    from selenium.webdriver.common.by import By

    service = seeded.service
    token, _ = await service.mint_token(OPS, "admin", "cli:ops")
    charged = await ledger_charged(seeded)
    assert charged == seeded.charged  # the ledger agrees with what each job reported
    # One job stays running while the page is read: in flight.
    seeded.emulator.inject(Fault(delay_s=60))
    running = asyncio.create_task(
        service.generate(Caller.parse("mcp:alice"), ImageRequest(
            prompt="slow", model="nebula:black-forest-labs/FLUX.1-schnell", size=(64, 64)))
    )  # fmt: skip
    while not await service.jobs_in_flight(OPS):
        await asyncio.sleep(0.01)
    pages: list[str] = []

    def browse(base: str) -> dict[str, Any]:
        with chromium(tmp_path / "profile") as driver:
            driver.get(f"{base}/admin/?days=30")
            assert driver.find_element(By.ID, "token").get_attribute("type") == "password"
            driver.find_element(By.ID, "token").send_keys(token)
            click_to(driver, driver.find_element(By.ID, "signin"), "credits-chart")
            seen = read_overview(driver)
            cookie = driver.get_cookie("imagegate_admin")
            pages.append(driver.page_source)
            for dark in (False, True):
                for phone in (False, True):
                    shoot(driver, screenshots, "overview", phone=phone, dark=dark)
            # A thumbnail opens its job, which shows the full image.
            thumb = driver.find_element(By.CSS_SELECTOR, "#gallery a")
            thumb_loaded = loaded_width(driver, thumb.find_element(By.TAG_NAME, "img"))
            click_to(driver, thumb, "job-id")
            seen["job_id"] = driver.find_element(By.ID, "job-id").text
            image = driver.find_element(By.CSS_SELECTOR, ".images img")
            seen["image_width"] = loaded_width(driver, image)
            seen["thumb_width"] = thumb_loaded
            pages.append(driver.page_source)
            driver.get(f"{base}/admin/users/discord%3A111")
            seen["ledger"] = [
                (row.get_attribute("data-kind"), int(row.get_attribute("data-held")))
                for row in driver.find_elements(By.CSS_SELECTOR, "#ledger tbody tr")
            ]
            seen["user_jobs"] = len(driver.find_elements(By.CSS_SELECTOR, "#jobs tbody tr"))
            shoot(driver, screenshots, "user", phone=False, dark=False)
            shoot(driver, screenshots, "user", phone=True, dark=True)
            pages.append(driver.page_source)
            seen["cookie"] = cookie
            return seen

    try:
        async with serving(service) as base:
            seen = await asyncio.to_thread(browse, base)
        # `imagegate report --json`, run while the page's job is still in flight.
        report = (await asyncio.to_thread(report_json, seeded, 30))["usage"]
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)

    total = sum(charged.values())
    assert seen["chart_total"] == seen["total"] == total
    assert seen["bars"] == seen["legend"] == {m: c for m, c in seeded.by_model.items() if c}
    assert seen["users"] == {
        user: (charged[user], seeded.jobs[user] + (user == "mcp:alice"), seeded.failed[user])
        for user in seeded.jobs
    }
    assert seen["in_flight"] == 1
    assert seen["job_id"] == seeded.job_ids[-1]  # the newest result comes first
    assert seen["image_width"] == 64 and seen["thumb_width"] > 0
    entries = await service.history(OPS, Caller.parse("discord:111"), limit=1000)
    assert seen["ledger"] == [(e.kind, e.d_held) for e in entries]
    assert seen["user_jobs"] == seeded.jobs["discord:111"]
    cookie = seen["cookie"]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and "expiry" in cookie
    for page in pages:
        assert token not in page and cookie["value"] not in page
        assert seeded.emulator.api_key not in page
    assert len(list(screenshots.glob("*.png"))) >= 6

    # `imagegate report --json` prints the figures the page showed.
    assert report["credits"] == seen["total"] and report["jobs"] == seen["jobs"]
    assert {u["user"]: (u["credits"], u["jobs"], u["refunded"]) for u in report["top_users"]} == (
        seen["users"]
    )
