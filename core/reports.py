"""Read-only figures for operators: where credits go, who spends them, what fails, runways.

Every figure is read from the ledger, the holds and the job records that the quota and the
service write, never from copies kept elsewhere, so the dashboard, ``imagegate report`` and
the Discord digest always agree with ``imagegate quota history``. Days are UTC days.

- Credits charged are the ledger's ``capture`` entries, on the day they were charged, under the
  model the job asked for.
- A job *failed* when it ended ``failed`` or ``interrupted`` (``cancelled`` is the user's
  choice, not a failure); it was *refunded* when it did not fully succeed and its hold gave
  credits back (``release`` or ``expire`` entries).
- A provider's runway is its balance over its burn: how fast its own balance (as its API
  reports it, snapshots in ``provider_balance``) fell over the last 7 days, top-ups ignored.
"""

from __future__ import annotations

import re
import time
from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta

from pydantic import BaseModel

from .db import Database, Tx, from_row

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
BURN_WINDOW_DAYS = 7
MIN_BURN_SPAN_MS = HOUR_MS  # less history than this tells nothing about a daily burn
_EPOCH = date(1970, 1, 1)
_FAILED = "status IN ('failed', 'interrupted')"
_REFUNDED = (
    "status NOT IN ('succeeded', 'running') AND EXISTS (SELECT 1 FROM ledger l"
    " WHERE l.hold_id = j.hold_id AND l.kind IN ('release', 'expire') AND l.d_held < 0)"
)
# PostgreSQL sums BIGINT as NUMERIC: cast back, so both backends hand back integers.
_FAILED_COUNT = f"CAST(SUM(CASE WHEN {_FAILED} THEN 1 ELSE 0 END) AS BIGINT)"
_REFUNDED_COUNT = f"CAST(SUM(CASE WHEN {_REFUNDED} THEN 1 ELSE 0 END) AS BIGINT)"
_CHARGED = "CAST(SUM(-l.d_held) AS BIGINT)"
_JOB_COLUMNS = (
    "job_id, user_id AS user, operation, model, status, credits_charged, error, created_at,"
    " finished_at"
)


class DayFigures(BaseModel):
    """One UTC day: credits charged per model, and the jobs started that day."""

    day: date
    credits: dict[str, int]
    jobs: int
    failed: int
    refunded: int

    @property
    def total_credits(self) -> int:
        return sum(self.credits.values())


class UserFigures(BaseModel):
    """One user's spending over a range."""

    user: str
    frontend: str
    credits: int
    jobs: int
    failed: int
    refunded: int


class Usage(BaseModel):
    """Figures for the UTC days ``start`` to ``end`` (both included), oldest day first."""

    start: date
    end: date
    days: list[DayFigures]
    models: list[str]  # most credits first
    credits: int
    jobs: int
    failed: int
    refunded: int
    failure_rate: float
    refund_rate: float
    top_users: list[UserFigures]


class JobSummary(BaseModel):
    job_id: str
    user: str
    operation: str
    model: str
    status: str
    credits_charged: int
    error: str | None
    created_at: datetime
    finished_at: datetime | None


class ImageSummary(BaseModel):
    image_id: str
    job_id: str
    user: str
    model: str
    width: int
    height: int
    created_at: datetime


class ProviderRunway(BaseModel):
    """A provider's balance (as its API reports it) and how long it lasts at the recent burn."""

    provider: str
    kind: str
    balance: str | None  # the provider's own wording, e.g. "$12.50" or "500 credits"
    amount: float | None = None
    unit: str | None = None
    burn_per_day: float | None = None  # in ``unit``; None until an hour of history exists
    runway_days: float | None = None  # None: unknown, or nothing is being spent
    credits_7d: int = 0  # imagegate credits charged for this provider's models in 7 days
    checked_at: datetime | None = None


class Digest(BaseModel):
    """What ``imagegate report`` prints and the weekly Discord digest posts."""

    generated_at: datetime
    usage: Usage
    in_flight: int
    providers: list[ProviderRunway]


def day_of(ms: int) -> date:
    return _EPOCH + timedelta(days=ms // DAY_MS)


def frontend_of(user: str) -> str:
    return user.partition(":")[0]


def provider_of(model_ref: str) -> str:
    return model_ref.partition(":")[0]


_BALANCE = re.compile(r"^\s*(\$)?\s*(-?\d+(?:\.\d+)?)\s*([A-Za-z]+)?")


def parse_balance(text: str | None) -> tuple[float, str] | None:
    """``"$12.50"`` -> ``(12.5, "$")``, ``"500 credits"`` -> ``(500.0, "credits")``; None when
    the text holds no amount (``"unknown"``, ``"unavailable (...)"``)."""
    match = _BALANCE.match(text or "")
    if match is None:
        return None
    return float(match[2]), "$" if match[1] else (match[3] or "")


def amount_text(amount: float, unit: str) -> str:
    """``$12.50``, ``500 credits``."""
    return f"${amount:,.2f}" if unit == "$" else f"{amount:g} {unit}".strip()


class Reports:
    """The read-only queries behind the dashboard, ``imagegate report`` and the alerts.

    ``clock`` returns epoch seconds (injectable for tests).
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def usage(self, days: int, *, top: int = 10) -> Usage:
        """The last ``days`` UTC days, today included."""
        end_day = self.now_ms() // DAY_MS
        start_ms, end_ms = (end_day - days + 1) * DAY_MS, (end_day + 1) * DAY_MS
        credits = await self._credits(start_ms, end_ms)
        jobs = await self._jobs(start_ms, end_ms)
        figures = [
            DayFigures(
                day=_EPOCH + timedelta(days=n),
                credits=credits.get(n, {}),
                jobs=jobs.get(n, (0, 0, 0))[0],
                failed=jobs.get(n, (0, 0, 0))[1],
                refunded=jobs.get(n, (0, 0, 0))[2],
            )
            for n in range(end_day - days + 1, end_day + 1)
        ]
        by_model: dict[str, int] = defaultdict(int)
        for day in figures:
            for model, amount in day.credits.items():
                by_model[model] += amount
        total_jobs = sum(d.jobs for d in figures)
        failed, refunded = sum(d.failed for d in figures), sum(d.refunded for d in figures)
        return Usage(
            start=figures[0].day,
            end=figures[-1].day,
            days=figures,
            models=sorted(by_model, key=lambda m: (-by_model[m], m)),
            credits=sum(by_model.values()),
            jobs=total_jobs,
            failed=failed,
            refunded=refunded,
            failure_rate=failed / total_jobs if total_jobs else 0.0,
            refund_rate=refunded / total_jobs if total_jobs else 0.0,
            top_users=await self._top_users(start_ms, end_ms, top),
        )

    async def _credits(self, start_ms: int, end_ms: int) -> dict[int, dict[str, int]]:
        rows = await self.db.fetchall(
            f"SELECT l.created_at / 86400000, COALESCE(j.model, '(no job)'), {_CHARGED}"
            " FROM ledger l JOIN hold h ON h.hold_id = l.hold_id"
            " LEFT JOIN job j ON j.job_id = h.job_id"
            " WHERE l.kind = 'capture' AND l.created_at >= ? AND l.created_at < ?"
            " GROUP BY l.created_at / 86400000, COALESCE(j.model, '(no job)')",
            (start_ms, end_ms),
        )
        out: dict[int, dict[str, int]] = defaultdict(dict)
        for day, model, amount in rows:
            out[day][model] = amount
        return out

    async def _jobs(self, start_ms: int, end_ms: int) -> dict[int, tuple[int, int, int]]:
        rows = await self.db.fetchall(
            f"SELECT created_at / 86400000, COUNT(*), {_FAILED_COUNT}, {_REFUNDED_COUNT}"
            " FROM job j"
            " WHERE created_at >= ? AND created_at < ? GROUP BY created_at / 86400000",
            (start_ms, end_ms),
        )
        return {day: (count, failed, refunded) for day, count, failed, refunded in rows}

    async def _top_users(self, start_ms: int, end_ms: int, top: int) -> list[UserFigures]:
        charged = await self.db.fetchall(
            f"SELECT user_id, {_CHARGED} FROM ledger l WHERE kind = 'capture'"
            " AND created_at >= ? AND created_at < ? GROUP BY user_id",
            (start_ms, end_ms),
        )
        jobs = await self.db.fetchall(
            f"SELECT user_id, COUNT(*), {_FAILED_COUNT}, {_REFUNDED_COUNT} FROM job j"
            " WHERE created_at >= ? AND created_at < ? GROUP BY user_id",
            (start_ms, end_ms),
        )
        credits = {user: amount for user, amount in charged}
        counts = {user: (count, failed, refunded) for user, count, failed, refunded in jobs}
        users = sorted(set(credits) | set(counts), key=lambda u: (-credits.get(u, 0), u))
        return [
            UserFigures(
                user=user,
                frontend=frontend_of(user),
                credits=credits.get(user, 0),
                jobs=counts.get(user, (0, 0, 0))[0],
                failed=counts.get(user, (0, 0, 0))[1],
                refunded=counts.get(user, (0, 0, 0))[2],
            )
            for user in users[:top]
        ]

    async def in_flight(self) -> list[JobSummary]:
        """Jobs running now, oldest first."""
        rows = await self.db.fetchall(
            f"SELECT {_JOB_COLUMNS} FROM job WHERE status = 'running' ORDER BY created_at"
        )
        return [from_row(JobSummary, row) for row in rows]

    async def user_jobs(self, user: str, *, limit: int = 50) -> list[JobSummary]:
        """A user's jobs, newest first."""
        rows = await self.db.fetchall(
            f"SELECT {_JOB_COLUMNS} FROM job WHERE user_id = ? ORDER BY created_at DESC LIMIT ?",
            (user, limit),
        )
        return [from_row(JobSummary, row) for row in rows]

    async def recent_images(self, *, limit: int = 24) -> list[ImageSummary]:
        """The newest stored results, newest first."""
        rows = await self.db.fetchall(
            "SELECT image_id, job_id, user_id AS user, model, width, height, created_at FROM image"
            " ORDER BY created_at DESC, image_id LIMIT ?",
            (limit,),
        )
        return [from_row(ImageSummary, row) for row in rows]

    async def failures_by_model(self, since_ms: int) -> list[tuple[str, int, int]]:
        """(model, jobs finished since ``since_ms``, of them failed), by model."""
        rows = await self.db.fetchall(
            f"SELECT model, COUNT(*), {_FAILED_COUNT} FROM job"
            " WHERE finished_at >= ? AND status <> 'running' GROUP BY model ORDER BY model",
            (since_ms,),
        )
        return [(model, count, failed) for model, count, failed in rows]

    async def credits_by_provider(self, since_ms: int) -> dict[str, int]:
        """Credits charged since ``since_ms``, per provider of the job's model."""
        rows = await self.db.fetchall(
            f"SELECT j.model, {_CHARGED} FROM ledger l JOIN hold h ON h.hold_id = l.hold_id"
            " JOIN job j ON j.job_id = h.job_id WHERE l.kind = 'capture' AND l.created_at >= ?"
            " GROUP BY j.model",
            (since_ms,),
        )
        out: dict[str, int] = defaultdict(int)
        for model, amount in rows:
            out[provider_of(model)] += amount
        return dict(out)

    # --- provider balances: the one thing here that writes (a snapshot per check) ----------

    async def last_balance_at(self, provider: str) -> int | None:
        row = await self.db.fetchone(
            "SELECT MAX(taken_at) FROM provider_balance WHERE provider = ?", (provider,)
        )
        return row[0] if row else None

    async def record_balance(self, provider: str, amount: float, unit: str) -> None:
        """Keep a balance snapshot: the burn is measured from these."""
        await self.db.transact(_insert_balance, provider, self.now_ms(), amount, unit)

    async def runway(self, provider: str) -> tuple[float, str, float | None, float | None, int]:
        """(latest amount, unit, burn per day, runway in days, taken at ms) from the snapshots of
        the last 7 days; raises LookupError when there are none."""
        since = self.now_ms() - BURN_WINDOW_DAYS * DAY_MS
        rows = await self.db.fetchall(
            "SELECT taken_at, amount, unit FROM provider_balance WHERE provider = ?"
            " AND taken_at >= ? ORDER BY taken_at",
            (provider, since),
        )
        if not rows:
            raise LookupError(provider)
        first_at, last_at = rows[0][0], rows[-1][0]
        amount, unit = rows[-1][1], rows[-1][2]
        if last_at - first_at < MIN_BURN_SPAN_MS:
            return amount, unit, None, None, last_at
        spent = sum(max(0.0, a[1] - b[1]) for a, b in zip(rows, rows[1:], strict=False))
        burn = spent / ((last_at - first_at) / DAY_MS)
        return amount, unit, burn, (max(0.0, amount) / burn if burn > 0 else None), last_at


async def _insert_balance(tx: Tx, provider: str, now_ms: int, amount: float, unit: str) -> None:
    await tx.execute(
        "INSERT INTO provider_balance (provider, taken_at, amount, unit) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (provider, taken_at) DO NOTHING",
        (provider, now_ms, amount, unit),
    )


def digest_text(digest: Digest) -> str:
    """The digest as plain text (the terminal and the Discord audit channel)."""
    u = digest.usage
    lines = [
        f"imagegate usage {u.start} to {u.end} (UTC): {u.credits} credit(s) charged,"
        f" {u.jobs} job(s), {u.failed} failed ({u.failure_rate:.0%}),"
        f" {u.refunded} refunded ({u.refund_rate:.0%}); {digest.in_flight} running now",
    ]
    if u.models:
        by_model: dict[str, int] = defaultdict(int)
        for day in u.days:
            for model, amount in day.credits.items():
                by_model[model] += amount
        lines.append("credits by model: " + ", ".join(f"{m} {by_model[m]}" for m in u.models))
    if u.top_users:
        lines.append(
            "top users: "
            + ", ".join(f"{t.user} {t.credits} ({t.jobs} job(s))" for t in u.top_users[:5])
        )
    for p in digest.providers:
        lines.append(f"{p.provider}: {runway_text(p)}")
    return "\n".join(lines)


def runway_text(p: ProviderRunway) -> str:
    """``$12.50 left, about 4.2 days at 2.95 $/day`` and the like."""
    if p.balance is None:
        return "no balance API"
    if p.amount is None:
        return f"balance {p.balance}"
    if p.burn_per_day is None:
        return f"{p.balance} left (burn: measuring, needs an hour of history)"
    if p.runway_days is None:
        return f"{p.balance} left, nothing spent in the last {BURN_WINDOW_DAYS} days"
    return f"{p.balance} left, about {p.runway_days:.1f} days at {p.burn_per_day:.3g} {p.unit}/day"
