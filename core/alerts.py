"""Operator alerts: a provider about to run dry, a model failing; each at most once a day.

``ImageService.check_alerts`` finds the conditions that hold now and claims each one for the
current UTC day and one sink in ``alert_sent`` (one row per sink, alert and period, written
once), so however many processes check, and however often, a condition reaches each sink once
per day: the log (every long-running service checks in the background, with or without a bot)
and the bot's audit channel.
"""

from __future__ import annotations

from dataclasses import dataclass

from .db import Database, Tx


@dataclass(frozen=True)
class Alert:
    """``key`` names the condition (``runway:<provider>``, ``failure_rate:<model>``)."""

    key: str
    message: str


class AlertBook:
    """Remembers which alert was sent in which period."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def claim(self, key: str, period: str, now_ms: int) -> bool:
        """True exactly once per (``key``, ``period``): the caller should send it."""
        return await self.db.transact(_claim, key, period, now_ms)


async def _claim(tx: Tx, key: str, period: str, now_ms: int) -> bool:
    changed = await tx.execute(
        "INSERT INTO alert_sent (alert, period, sent_at) VALUES (?, ?, ?)"
        " ON CONFLICT (alert, period) DO NOTHING",
        (key, period, now_ms),
    )
    return changed == 1
