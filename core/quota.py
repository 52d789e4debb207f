"""Per-user credits: reserve -> settle | release, with an append-only ledger.

A user's credits are the period's allowance (drawn first, reset each UTC day/week/month) plus
granted credits that never expire, minus any debt. Reserving moves credits into ``held``;
settling charges only what was delivered and gives the rest back; releasing gives everything
back. Settling a hold that was released meanwhile (its process's lease lapsed) still charges
what was delivered, as a ``late_charge`` entry: from the allowance, then granted credits, and
the rest as debt, which the next period's allowance pays first. Each step is one
short transaction, guarded by the hold's state, so it happens at most once. The same
transaction bodies run on SQLite and PostgreSQL (``core.db``, ``core.pg`` say how each keeps
concurrent reservers from overspending). Invariant (``check_ledger``): per user, the ledger's
deltas sum to the account row.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .db import Database, Tx, from_row, skip_locked
from .errors import IdempotencyConflictError, QuotaExceededError, RateLimitedError
from .leases import LAPSED, lease_clock
from .types import LedgerEntry, QuotaStatus


@dataclass(frozen=True)
class Policy:
    """The limits that apply to one caller right now (computed by the service from settings)."""

    allowance: int
    period: str = "day"
    rate_per_minute: int = 0
    max_in_flight: int = 0
    hold_ttl_s: float = 900.0


@dataclass(frozen=True)
class Hold:
    hold_id: str
    user: str
    amount: int
    state: str
    job_id: str | None
    replayed: bool = False


def period_key(period: str, now: datetime) -> str:
    """The name of the UTC period containing ``now``: 2026-11-21, 2026-W47 or 2026-11."""
    if period == "day":
        return now.strftime("%Y-%m-%d")
    if period == "week":
        year, week, _ = now.isocalendar()
        return f"{year}-W{week:02d}"
    return now.strftime("%Y-%m")


def period_start(period: str, now: datetime) -> datetime:
    """When the period containing ``now`` began (UTC)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day
    if period == "week":
        return day - timedelta(days=now.weekday())
    return day.replace(day=1)


def period_end(period: str, now: datetime) -> datetime:
    """When the period containing ``now`` ends (UTC)."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "day":
        return day + timedelta(days=1)
    if period == "week":
        return day + timedelta(days=7 - now.weekday())
    return (day.replace(day=28) + timedelta(days=4)).replace(day=1)


class QuotaStore:
    """Credits and holds in the database. ``clock`` returns epoch seconds (injectable for
    tests)."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    def _now(self) -> tuple[int, datetime]:
        now = self.clock()
        return int(now * 1000), datetime.fromtimestamp(now, UTC)

    async def reserve(
        self,
        user: str,
        *,
        amount: int,
        idem_key: str,
        request_hash: str,
        policy: Policy,
        job_id: str | None = None,
        owner: str | None = None,
        also: Callable[[Tx, Hold], Awaitable[Any]] | None = None,
    ) -> Hold:
        """Hold ``amount`` credits for a job, or replay the hold made under ``idem_key``.

        ``await also(tx, hold)`` runs in the same transaction once a new hold is made (never for a
        replay): what must exist with the hold, such as its job record, is written with it or
        not at all, in one trip to the database.

        Raises:
            QuotaExceededError: not enough credits.
            RateLimitedError: the per-minute rate or the in-flight cap was hit.
            IdempotencyConflictError: ``idem_key`` was used for a different request.
        """
        now_ms, now = self._now()
        return await self.db.transact(
            _reserve, user, amount, idem_key, request_hash, policy, job_id, owner, now_ms, now, also
        )

    async def settle(self, hold_id: str, actual: int) -> int:
        """Charge ``actual`` credits (capped at the hold) and give back the rest.

        Returns the amount charged; 0 when the hold was already settled, released or expired.
        """
        return await self._finish(hold_id, actual, "release") or 0

    async def settle_and_report(
        self,
        hold_id: str,
        actual: int,
        *,
        policy: Policy,
        also: Callable[[Tx, int], Awaitable[Any]] | None = None,
    ) -> tuple[int, QuotaStatus]:
        """``settle``, plus the hold's owner's credits right after it; ``await also(tx, charged)``
        runs in the same transaction (the job's outcome is recorded with its charge). A hold
        released meanwhile (its process's lease lapsed) is charged all the same, as a
        ``late_charge`` (see the module docstring); only a hold settled before charges nothing.

        Raises:
            LookupError: there is no such hold.
        """
        now_ms, now = self._now()
        return await self.db.transact(
            _settle_and_report, hold_id, actual, policy, now_ms, now, also
        )

    async def release(self, hold_id: str, *, kind: str = "release") -> bool:
        """Give a hold back in full; False when it was already finished."""
        return await self._finish(hold_id, 0, kind) is not None

    async def _finish(self, hold_id: str, actual: int, refund_kind: str) -> int | None:
        """Close a held hold, charging ``actual``; None when it was not held any more."""
        now_ms, _ = self._now()
        closed = await self.db.transact(_close_hold, hold_id, actual, refund_kind, now_ms)
        return None if closed is None else closed[1]

    async def sweep(self, *, instance: str | None = None) -> int:
        """Release the holds no live process will finish: those whose owner's lease lapsed
        (never ``instance``'s own, this process's), and owner-less holds past their expiry.
        A hold whose owner's lease is live never expires, however long its job takes.

        Returns how many were released.
        """
        now_ms, _ = self._now()
        return await self.db.transact(_sweep, instance or "", now_ms)

    async def grant(
        self, user: str, credits: int, *, reason: str, policy: Policy, actor: str | None = None
    ) -> None:
        """Add (or, with a negative number, remove) granted credits that never expire;
        ``actor`` (who did it) goes into the ledger entry.

        Raises:
            QuotaExceededError: removing more than the user has.
        """
        now_ms, now = self._now()
        await self.db.transact(_grant, user, credits, reason, policy, actor, now_ms, now)

    async def set_allowance(
        self, user: str, allowance: int | None, *, policy: Policy, actor: str | None = None
    ) -> None:
        """Override the user's per-period allowance (None: back to the policy's), recorded in
        the ledger as an ``allowance`` entry (old and new value, ``actor``; no credits move)."""
        now_ms, now = self._now()
        await self.db.transact(_set_allowance, user, allowance, policy, actor, now_ms, now)

    async def status(self, user: str, policy: Policy) -> QuotaStatus:
        """The user's credits now (read-only: an unseen user gets the policy's defaults)."""
        _, now = self._now()
        row = await self.db.fetchone(_STATUS_SQL, _status_params(user, policy, now))
        return _status(row, user, policy, now)

    async def check_affordable(self, user: str, amount: int, policy: Policy) -> None:
        """Refuse early, from a read, a job the user cannot afford, before costly work such as
        decoding its images; ``reserve`` still decides (credits may go meanwhile).

        Raises:
            QuotaExceededError: fewer than ``amount`` credits left.
        """
        status = await self.status(user, policy)
        if status.remaining < amount:
            raise _exceeded(status.remaining, amount, policy, self._now()[1])

    async def history(self, user: str, *, limit: int = 100) -> list[LedgerEntry]:
        """The user's most recent ledger entries, newest first."""
        rows = await self.db.fetchall(
            "SELECT entry_id, user_id AS user, kind, d_allowance_used, d_granted, d_held, hold_id,"
            " reason, created_at, actor, d_debt FROM ledger WHERE user_id = ?"
            " ORDER BY entry_id DESC LIMIT ?",
            (user, limit),
        )
        return [from_row(LedgerEntry, row) for row in rows]

    async def hold_state(self, hold_id: str) -> tuple[str, int | None] | None:
        """(state, settled amount) of a hold, or None."""
        row = await self.db.fetchone(
            "SELECT state, settled_amount FROM hold WHERE hold_id = ?", (hold_id,)
        )
        return (row[0], row[1]) if row else None

    async def check_ledger(self) -> list[str]:
        """Users whose ledger does not sum to their account row (empty when all is well)."""
        rows = await self.db.fetchall(
            "SELECT a.user_id, a.allowance_used, a.granted, a.held, a.debt,"
            " CAST(COALESCE(SUM(l.d_allowance_used), 0) AS BIGINT),"
            " CAST(COALESCE(SUM(l.d_granted), 0) AS BIGINT),"
            " CAST(COALESCE(SUM(l.d_held), 0) AS BIGINT),"
            " CAST(COALESCE(SUM(l.d_debt), 0) AS BIGINT),"
            " (SELECT CAST(COALESCE(SUM(from_allowance + from_granted), 0) AS BIGINT) FROM hold h"
            "   WHERE h.user_id = a.user_id AND h.state = 'held')"
            " FROM account a LEFT JOIN ledger l ON l.user_id = a.user_id"
            " GROUP BY a.user_id, a.allowance_used, a.granted, a.held, a.debt"
        )
        return [r[0] for r in rows if r[1:5] != r[5:9] or r[3] != r[9]]


# --- transaction bodies (``Database.transact``): portable SQL, ``?`` placeholders -----------

# The statements of a reserve and a settle (bench/bench_ledger_pg.py sends the same ones
# through the bare driver).
_EXISTING_SQL = (
    "SELECT hold_id, user_id, from_allowance + from_granted, state, job_id, request_hash"
    " FROM hold WHERE idem_key = ?"
)
_ACCOUNT_SQL = (
    "INSERT INTO account (user_id, period, updated_at) VALUES (?, ?, ?)"
    # Updating a column other than the key: a key update would make SQLite check every
    # hold of the account (a full scan of ``hold``) for its foreign key.
    " ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at"
    " RETURNING period, allowance_used, granted, allowance_override, debt"
)
_TAKE_SQL = (
    "UPDATE account SET allowance_used = allowance_used + ?, granted = granted - ?,"
    " held = held + ?, updated_at = ? WHERE user_id = ?"
)
_HOLD_SQL = (
    "INSERT INTO hold (hold_id, user_id, idem_key, request_hash, period,"
    " from_allowance, from_granted, state, job_id, owner, created_at, expires_at)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, 'held', ?, ?, ?, ?)"
)
_LEDGER_SQL = (
    "INSERT INTO ledger (user_id, hold_id, kind, d_allowance_used, d_granted, d_held, d_debt,"
    " reason, created_at, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# Closing a hold: state, amount charged (capped at the hold), for the hold's id, if held.
_CLOSE_SQL = (
    "UPDATE hold SET state = ?, settled_amount = CASE WHEN from_allowance + from_granted < ?"
    " THEN from_allowance + from_granted ELSE ? END WHERE hold_id = ? AND state = 'held'"
)
_CLOSED = "user_id, from_allowance, from_granted, period, settled_amount"
# ``_close_hold`` on PostgreSQL, as one statement (one trip to the server, not three): the same
# steps, locks taken in the same order (the hold's row, then its account's) and the refund
# entry made from what the account update returned (after a period rollover the old
# allowance's refund is dropped). Parameters: state, actual, actual, hold id, now, hold id,
# now, hold id, refund kind, now.
_CLOSE_HOLD_PG = (
    f"WITH h AS ({_CLOSE_SQL} RETURNING {_CLOSED}),"
    " s AS (SELECT user_id, period, from_allowance + from_granted AS total, settled_amount,"
    "   from_allowance - LEAST(settled_amount, from_allowance) AS refund_a,"
    "   from_granted - settled_amount + LEAST(settled_amount, from_allowance) AS refund_g"
    "   FROM h),"
    " a AS (UPDATE account SET allowance_used = allowance_used"
    "   - CASE WHEN account.period = s.period THEN s.refund_a ELSE 0 END,"
    "   granted = granted + s.refund_g, held = held - s.total, updated_at = ?"
    "   FROM s WHERE account.user_id = s.user_id RETURNING account.period),"
    " l AS (INSERT INTO ledger (user_id, hold_id, kind, d_allowance_used, d_granted, d_held,"
    "   created_at)"
    "   SELECT user_id, ?, 'capture', 0, 0, -settled_amount, CAST(? AS BIGINT) FROM s"
    "   WHERE settled_amount > 0"
    "   UNION ALL SELECT s.user_id, ?, ?, CASE WHEN a.period = s.period THEN -s.refund_a"
    "   ELSE 0 END, s.refund_g, -(s.refund_a + s.refund_g), CAST(? AS BIGINT) FROM s, a"
    "   WHERE s.refund_a <> 0 OR s.refund_g <> 0 OR s.settled_amount = 0)"
    " SELECT user_id, settled_amount FROM s"
)


_STATUS_SQL = (  # parameters: ``_status_params``
    "SELECT a.period, a.allowance_used, a.granted, a.held, a.allowance_override, a.debt,"
    " (SELECT count(*) FROM hold WHERE user_id = ? AND state = 'held'),"
    " (SELECT CAST(COALESCE(SUM(d_held), 0) AS BIGINT) FROM ledger"
    "   WHERE user_id = ? AND kind = 'late_charge' AND created_at >= ?)"
    " FROM (SELECT 1) AS one LEFT JOIN account a ON a.user_id = ?"
)


def _status_params(user: str, policy: Policy, now: datetime) -> tuple[Any, ...]:
    since = int(period_start(policy.period, now).timestamp() * 1000)
    return (user, user, since, user)


def _status(row: Any | None, user: str, policy: Policy, now: datetime) -> QuotaStatus:
    period, used, granted, held, override, debt, in_flight, late = row or (
        (None, 0, 0, 0, None, 0, 0, 0)
    )
    allowance = policy.allowance if override is None else override
    if period != period_key(policy.period, now):  # as the next write will roll it over
        used, debt = _new_period(allowance, debt or 0)
    return QuotaStatus(
        user=user,
        remaining=max(0, allowance - used) + (granted or 0) - (debt or 0),
        allowance=allowance,
        granted=granted or 0,
        held=held or 0,
        in_flight=in_flight or 0,
        period=policy.period,
        resets_at=period_end(policy.period, now),
        debt=debt or 0,
        late_charged=late or 0,
    )


def _new_period(allowance: int, debt: int) -> tuple[int, int]:
    """(allowance used, debt) at the start of a period: the allowance pays the debt first."""
    paid = min(debt, allowance)
    return paid, debt - paid


async def _reserve(
    tx: Tx,
    user: str,
    amount: int,
    idem_key: str,
    request_hash: str,
    policy: Policy,
    job_id: str | None,
    owner: str | None,
    now_ms: int,
    now: datetime,
    also: Callable[[Tx, Hold], Awaitable[Any]] | None = None,
) -> Hold:
    replay = await _existing_hold(tx, idem_key, request_hash)
    if replay is not None:
        return replay
    # The account row stays locked from here to the commit (PostgreSQL): the checks below
    # see every hold this user's other reserves committed.
    used, granted, allowance, debt = await _account(tx, user, policy, now_ms, now)
    await _check_in_flight(tx, user, policy)
    available_allowance = max(0, allowance - used)
    if available_allowance + granted - debt < amount:
        raise _exceeded(available_allowance + granted - debt, amount, policy, now)
    await _take_rate_slot(tx, user, policy, now_ms)
    from_allowance = min(amount, available_allowance)
    from_granted = amount - from_allowance
    hold_id = uuid.uuid4().hex
    expires_ms = now_ms + int(policy.hold_ttl_s * 1000)
    key: tuple[Any, ...] = (hold_id, user, idem_key, request_hash, period_key(policy.period, now))
    hold_row = (*key, from_allowance, from_granted, job_id, owner, now_ms, expires_ms)
    take = (from_allowance, from_granted, amount, now_ms, user)
    entry = _entry(
        user, "hold", now_ms, hold_id, used=from_allowance, granted=-from_granted, held=amount
    )
    # The account row is locked: these writes race nothing, so they go in one trip.
    await tx.execute_all([(_TAKE_SQL, take), (_HOLD_SQL, hold_row), entry])
    hold = Hold(hold_id, user, amount, "held", job_id)
    if also is not None:
        await also(tx, hold)
    return hold


async def _sweep(tx: Tx, instance: str, now_ms: int) -> int:
    # Every sweeper takes the rows in one order (accounts by user, holds by id), so replicas
    # sweeping at once never wait on each other in a circle (a deadlock on PostgreSQL). There
    # the holds are locked as they are chosen, skipping those another transaction holds: it is
    # settling, releasing or sweeping them already. An owner-less hold expires by the clock
    # that set its expiry (its process's); an owned one when its owner's lease lapsed, by the
    # leases' clock, which also dates the release.
    lease_now = await lease_clock(tx, now_ms)
    rows = await tx.fetchall(
        "SELECT hold_id FROM hold WHERE state = 'held' AND ((owner IS NULL AND expires_at <= ?)"
        f" OR (owner IS NOT NULL AND owner <> ? AND owner {LAPSED})) ORDER BY user_id, hold_id"
        + skip_locked(tx, "hold"),
        (now_ms, instance, lease_now),
    )
    released = 0
    for row in rows:
        released += await _close_hold(tx, row[0], 0, "expire", lease_now) is not None
    return released


async def _settle_and_report(
    tx: Tx,
    hold_id: str,
    actual: int,
    policy: Policy,
    now_ms: int,
    now: datetime,
    also: Callable[[Tx, int], Awaitable[Any]] | None,
) -> tuple[int, QuotaStatus]:
    closed = await _close_hold(tx, hold_id, actual, "release", now_ms)
    if closed is None:  # released already (its process's lease lapsed): charge it anyway
        closed = await _late_charge(tx, hold_id, actual, policy, now_ms, now)
    user, charged = closed
    if also is not None:
        await also(tx, charged)
    status = await tx.fetchone(_STATUS_SQL, _status_params(user, policy, now))
    return charged, _status(status, user, policy, now)


async def _late_charge(
    tx: Tx, hold_id: str, actual: int, policy: Policy, now_ms: int, now: datetime
) -> tuple[str, int]:
    """Charge ``actual`` (capped at the hold) for a hold that was released or expired: from
    the allowance left, then granted credits, the rest as debt. The hold becomes settled, so
    this happens at most once. Returns (user, amount charged; 0 if settled before)."""
    row = await tx.fetchone(
        "UPDATE hold SET state = 'settled', settled_amount = CASE WHEN"
        " from_allowance + from_granted < ? THEN from_allowance + from_granted ELSE ? END"
        " WHERE hold_id = ? AND state IN ('released', 'expired') AND ? > 0"
        " RETURNING user_id, settled_amount",
        (actual, actual, hold_id, actual),
    )
    if row is None:  # settled already, or nothing to charge
        row = await tx.fetchone("SELECT user_id FROM hold WHERE hold_id = ?", (hold_id,))
        if row is None:
            raise LookupError(f"no hold {hold_id}")
        return row[0], 0
    user, charged = row
    used, granted, allowance, _ = await _account(tx, user, policy, now_ms, now)
    from_allowance = min(charged, max(0, allowance - used))
    from_granted = min(charged - from_allowance, granted)
    owed = charged - from_allowance - from_granted
    await tx.execute(
        "UPDATE account SET allowance_used = allowance_used + ?, granted = granted - ?,"
        " debt = debt + ?, updated_at = ? WHERE user_id = ?",
        (from_allowance, from_granted, owed, now_ms, user),
    )
    # Taken as a hold that is captured at once: reports count every charge as a capture.
    reason = "delivered after its reservation was released (its process's lease had lapsed)"
    await _ledger(
        tx,
        user,
        "late_charge",
        now_ms,
        hold_id,
        used=from_allowance,
        granted=-from_granted,
        held=charged,
        debt=owed,
        reason=reason,
    )
    await _ledger(tx, user, "capture", now_ms, hold_id, held=-charged)
    return user, charged


async def _close_hold(
    tx: Tx, hold_id: str, actual: int, refund_kind: str, now_ms: int
) -> tuple[str, int] | None:
    """Close a held hold, charging ``actual`` (capped at the hold): (user, amount charged), or
    None when it was not held any more."""
    actual = max(0, actual)
    state = "settled" if actual > 0 else _state_for(refund_kind)
    if tx.dialect == "postgresql":
        params = (state, actual, actual, hold_id, now_ms, hold_id, now_ms, hold_id, refund_kind)
        closed = await tx.fetchone(_CLOSE_HOLD_PG, (*params, now_ms))
        return None if closed is None else (closed[0], closed[1])
    row = await tx.fetchone(f"{_CLOSE_SQL} RETURNING {_CLOSED}", (state, actual, actual, hold_id))
    if row is None:
        return None
    user, from_a, from_g, hold_period, charged = row
    charged_a = min(charged, from_a)
    refund_a, refund_g = from_a - charged_a, from_g - (charged - charged_a)
    # After a period rollover the old allowance is gone: its refund is dropped, not added to
    # the new period.
    (current,) = await tx.fetchone(
        "UPDATE account SET allowance_used = allowance_used - CASE WHEN period = ? THEN ? ELSE 0"
        " END, granted = granted + ?, held = held - ?, updated_at = ? WHERE user_id = ?"
        " RETURNING period",
        (hold_period, refund_a, refund_g, from_a + from_g, now_ms, user),
    )
    d_used = -refund_a if current == hold_period else 0
    if charged:
        await _ledger(tx, user, "capture", now_ms, hold_id, held=-charged)
    if refund_a or refund_g or not charged:
        await _ledger(
            tx,
            user,
            refund_kind,
            now_ms,
            hold_id,
            used=d_used,
            granted=refund_g,
            held=-(refund_a + refund_g),
        )
    return user, charged


async def _grant(
    tx: Tx,
    user: str,
    credits: int,
    reason: str,
    policy: Policy,
    actor: str | None,
    now_ms: int,
    now: datetime,
) -> None:
    _, granted, _, _ = await _account(tx, user, policy, now_ms, now)
    if granted + credits < 0:
        raise QuotaExceededError(
            f"{user} has only {granted} granted credits", remaining=granted, needed=-credits
        )
    await tx.execute(
        "UPDATE account SET granted = granted + ?, updated_at = ? WHERE user_id = ?",
        (credits, now_ms, user),
    )
    kind = "grant" if credits >= 0 else "adjust"
    await _ledger(tx, user, kind, now_ms, None, granted=credits, reason=reason, actor=actor)


async def _set_allowance(
    tx: Tx,
    user: str,
    allowance: int | None,
    policy: Policy,
    actor: str | None,
    now_ms: int,
    now: datetime,
) -> None:
    _, _, before, _ = await _account(tx, user, policy, now_ms, now)
    await tx.execute(
        "UPDATE account SET allowance_override = ?, updated_at = ? WHERE user_id = ?",
        (allowance, now_ms, user),
    )
    after = f"{allowance}" if allowance is not None else f"the default ({policy.allowance})"
    reason = f"allowance {before} -> {after} per {policy.period}"
    await _ledger(tx, user, "allowance", now_ms, None, reason=reason, actor=actor)


def _state_for(kind: str) -> str:
    return {"release": "released", "expire": "expired"}[kind]


async def _existing_hold(tx: Tx, idem_key: str, request_hash: str) -> Hold | None:
    row = await tx.fetchone(_EXISTING_SQL, (idem_key,))
    if row is None:
        return None
    if row[5] != request_hash:
        raise IdempotencyConflictError(
            "this request id was already used for a different request; use a new one"
        )
    return Hold(row[0], row[1], row[2], row[3], row[4], replayed=True)


async def _account(
    tx: Tx, user: str, policy: Policy, now_ms: int, now: datetime
) -> tuple[int, int, int, int]:
    """Create the account if needed, lock it (PostgreSQL: until the commit) and roll its period
    over (the new allowance pays any debt first); returns (used, granted, allowance, debt), the
    allowance being the user's override or else the policy's."""
    period = period_key(policy.period, now)
    row = await tx.fetchone(_ACCOUNT_SQL, (user, period, now_ms))
    old_period, used, granted, override, debt = row
    allowance = policy.allowance if override is None else override
    if old_period != period:
        paid, left = _new_period(allowance, debt)
        await tx.execute(
            "UPDATE account SET period = ?, allowance_used = ?, debt = ? WHERE user_id = ?",
            (period, paid, left, user),
        )
        reason = f"new period {period}" + (f"; {paid} of it paid the debt" if paid else "")
        await _ledger(tx, user, "reset", now_ms, None, used=paid - used, debt=-paid, reason=reason)
        used, debt = paid, left
    return used, granted, allowance, debt


async def _check_in_flight(tx: Tx, user: str, policy: Policy) -> None:
    if not policy.max_in_flight:
        return
    row = await tx.fetchone(
        "SELECT count(*) FROM hold WHERE user_id = ? AND state = 'held'", (user,)
    )
    if row and row[0] >= policy.max_in_flight:
        raise RateLimitedError(
            f"you already have {row[0]} job(s) running (the limit is {policy.max_in_flight});"
            " wait for one to finish"
        )


async def _take_rate_slot(tx: Tx, user: str, policy: Policy, now_ms: int) -> None:
    """GCRA: one theoretical-arrival timestamp per user; bursts up to the per-minute rate."""
    if not policy.rate_per_minute:
        return
    interval = 60_000 // policy.rate_per_minute
    latest = now_ms + 60_000 - interval  # the last max(tat, now) that still takes a slot
    # tat' = max(tat, now) + interval, taken only while tat' - now <= one minute.
    row = await tx.fetchone(
        "INSERT INTO rate_bucket (user_id, name, tat_ms) VALUES (?, 'jobs', ?)"
        " ON CONFLICT (user_id, name) DO UPDATE SET tat_ms = CASE WHEN rate_bucket.tat_ms > ?"
        " THEN rate_bucket.tat_ms ELSE ? END + ?"
        " WHERE CASE WHEN rate_bucket.tat_ms > ? THEN rate_bucket.tat_ms ELSE ? END <= ?"
        " RETURNING tat_ms",
        (user, now_ms + interval, now_ms, now_ms, interval, now_ms, now_ms, latest),
    )
    if row is not None:
        return
    row = await tx.fetchone(
        "SELECT tat_ms FROM rate_bucket WHERE user_id = ? AND name = 'jobs'", (user,)
    )
    tat = row[0] if row else now_ms
    wait_s = max(1, (max(tat, now_ms) - latest) // 1000 + 1)
    retry_at = datetime.fromtimestamp(now_ms / 1000 + wait_s, UTC)
    raise RateLimitedError(
        f"too many jobs: the limit is {policy.rate_per_minute} per minute; try again in {wait_s} s",
        retry_at=retry_at,
    )


def _exceeded(remaining: int, needed: int, policy: Policy, now: datetime) -> QuotaExceededError:
    resets = period_end(policy.period, now)
    have = (
        f"you have {remaining} left"
        if remaining >= 0
        else f"you owe {-remaining} (for images delivered after their reservation was released)"
    )
    return QuotaExceededError(
        f"not enough credits: this job needs {needed} and {have};"
        f" your allowance resets at {resets:%Y-%m-%d %H:%M} UTC",
        remaining=max(0, remaining),
        needed=needed,
        retry_at=resets,
    )


async def _ledger(tx: Tx, *args: Any, **deltas: Any) -> None:
    """Append one ledger entry (``_entry``'s arguments)."""
    await tx.execute(*_entry(*args, **deltas))


def _entry(
    user: str,
    kind: str,
    now_ms: int,
    hold_id: str | None,
    *,
    used: int = 0,
    granted: int = 0,
    held: int = 0,
    debt: int = 0,
    reason: str | None = None,
    actor: str | None = None,
) -> tuple[str, tuple[Any, ...]]:
    """The statement appending one ledger entry, and its parameters."""
    return _LEDGER_SQL, (user, hold_id, kind, used, granted, held, debt, reason, now_ms, actor)
