"""Reports read the ledger (on both backends): credits by day and model, failures and
refunds, runways from balance snapshots; alerts are claimed once per condition and period."""

from __future__ import annotations

import pytest

from core import Caller, ImageRequest, ImageService, PermissionDeniedError
from core.dashboard.charts import axis_step
from core.reports import parse_balance, runway_text
from tests.conftest import make_settings
from tests.dashboard.conftest import DAY, OPS, Clock

USER = Caller.parse("discord:5")


@pytest.fixture
async def clocked(tmp_path, backend):
    """A service on each backend (SQLite, PostgreSQL) with a movable clock."""
    clock = Clock()
    settings = make_settings(tmp_path, database=backend, pricing={"default": 2})
    service = await ImageService.open(settings, sweeper=False, clock=clock)
    yield service, clock
    await service.aclose()


async def test_usage_counts_credits_on_the_day_they_were_charged(clocked):
    service, clock = clocked
    clock.offset = -2 * DAY
    await service.generate(USER, ImageRequest(prompt="a", n=2, size=(64, 64)))
    clock.offset = 0
    await service.generate(USER, ImageRequest(prompt="b", size=(64, 64)))
    await service.grant(OPS, USER, 5)  # grants are not charges
    usage = await service.usage(OPS, days=3)
    assert [d.total_credits for d in usage.days] == [4, 0, 2]
    assert [d.jobs for d in usage.days] == [1, 0, 1]
    assert usage.models == ["placeholder:default"] and usage.credits == 6
    (top,) = usage.top_users
    assert (top.user, top.frontend, top.credits, top.jobs, top.refunded) == (
        "discord:5",
        "discord",
        6,
        2,
        0,
    )
    assert (await service.usage(OPS, days=1)).credits == 2
    with pytest.raises(PermissionDeniedError):
        await service.usage(USER)


async def test_runway_from_balance_snapshots(clocked):
    service, clock = clocked
    reports = service.reports
    for hours, amount in ((-48, 10.0), (-24, 8.0), (-12, 20.0), (0, 18.0)):  # a top-up at -12
        clock.offset = hours * 3600
        await reports.record_balance("acme", amount, "$")
    amount, unit, burn, days, _ = await reports.runway("acme")
    assert (amount, unit) == (18.0, "$")
    assert burn == pytest.approx(4.0 / 2)  # 2 + 2 spent over 2 days; the top-up ignored
    assert days == pytest.approx(9.0)
    with pytest.raises(LookupError):
        await reports.runway("nobody")


def test_parse_balance_and_axis_steps():
    assert parse_balance("$12.50") == (12.5, "$")
    assert parse_balance("500 credits") == (500.0, "credits")
    assert parse_balance("1234.5 kudos") == (1234.5, "kudos")
    assert parse_balance("unknown") is None and parse_balance(None) is None
    assert [axis_step(v) for v in (0, 3, 4, 5, 9, 40, 41, 999)] == [1, 1, 1, 2, 5, 10, 20, 500]


async def test_alert_claims_are_once_per_period(clocked):
    service, _ = clocked
    book = service.alert_book
    assert await book.claim("runway:x", "2026-01-01", 1)
    assert not await book.claim("runway:x", "2026-01-01", 2)
    assert await book.claim("runway:x", "2026-01-02", 3)
    assert await service.check_alerts("log") == []  # nothing configured: nothing to say
    assert not await service.weekly_digest_due()


async def test_digest_text(clocked):
    service, _ = clocked
    await service.generate(USER, ImageRequest(prompt="a", size=(64, 64)))
    digest = await service.digest(OPS, days=7)
    text = "\n".join([runway_text(p) for p in digest.providers])
    assert "no balance API" in text
    from core import digest_text

    shown = digest_text(digest)
    assert "2 credit(s) charged, 1 job(s)" in shown and "discord:5 2" in shown
