"""ledger-pg: reserve + settle pairs through QuotaStore on PostgreSQL with 50 concurrent callers
(each a user of its own, a pool of 10 connections), versus the same statements in the same
transactions through bare asyncpg from 50 callers on a pool of the same size. The server is a
throwaway one started for the run (``tests/pgserver.py``) with PostgreSQL's durable defaults
(fsync, synchronous_commit on), on the same machine. Targets: >= 1,000 pairs/s, p99 <= 50 ms
per transaction, ratio >= 0.5."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.common import Result, main, percentile
from core.pg import PostgresDatabase
from core.quota import Policy, QuotaStore, period_key
from tests.pgserver import PostgresServer

CALLERS = 50
POOL = 10
POLICY = Policy(allowance=10**9)


async def _ours(url: str, pairs: int) -> tuple[float, list[float]]:
    """Pairs per second and each transaction's latency (ms, waiting for a connection
    included)."""
    db = await PostgresDatabase.open(url, pool_size=POOL)
    await db.upgrade()
    store = QuotaStore(db)
    latencies: list[float] = []

    async def caller(user: str, count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            hold = await store.reserve(
                user, amount=1, idem_key=uuid.uuid4().hex, request_hash="h", policy=POLICY
            )
            middle = time.perf_counter()
            await store.settle(hold.hold_id, 1)
            end = time.perf_counter()
            latencies.extend(((middle - start) * 1000, (end - middle) * 1000))

    try:
        await asyncio.gather(*(caller(f"warm{i}", 2) for i in range(CALLERS)))
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(caller(f"user{i}", pairs // CALLERS) for i in range(CALLERS)))
        elapsed = time.perf_counter() - start
    finally:
        await db.close()
    return (pairs // CALLERS) * CALLERS / elapsed, latencies


# The statements QuotaStore.reserve and .settle send for these calls (core/quota.py), as
# asyncpg takes them.
_RESERVE = (
    "SELECT hold_id, user_id, from_allowance + from_granted, state, job_id, request_hash"
    " FROM hold WHERE idem_key = $1",
    "INSERT INTO account (user_id, period, updated_at) VALUES ($1, $2, $3)"
    " ON CONFLICT (user_id) DO UPDATE SET updated_at = excluded.updated_at"
    " RETURNING period, allowance_used, granted, allowance_override",
    "UPDATE account SET allowance_used = allowance_used + $1, granted = granted - $2,"
    " held = held + $3, updated_at = $4 WHERE user_id = $5",
    "INSERT INTO hold (hold_id, user_id, idem_key, request_hash, period,"
    " from_allowance, from_granted, state, job_id, owner, created_at, expires_at)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, 'held', $8, $9, $10, $11)",
    "INSERT INTO ledger (user_id, hold_id, kind, d_allowance_used, d_granted, d_held, reason,"
    " created_at, actor) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
)
_SETTLE = (
    "UPDATE hold SET state = $1, settled_amount = CASE WHEN from_allowance + from_granted < $2"
    " THEN from_allowance + from_granted ELSE $3 END WHERE hold_id = $4 AND state = 'held'"
    " RETURNING user_id, from_allowance, from_granted, period, settled_amount",
    "UPDATE account SET allowance_used = allowance_used - CASE WHEN period = $1 THEN $2 ELSE 0"
    " END, granted = granted + $3, held = held - $4, updated_at = $5 WHERE user_id = $6"
    " RETURNING period",
    _RESERVE[4],
)


async def _bare(url: str, pairs: int) -> float:
    """The same statements, transactions and concurrency through asyncpg alone."""
    db = await PostgresDatabase.open(url, pool_size=1)
    await db.upgrade()  # the schema only
    await db.close()
    pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL)
    period = period_key("day", datetime.now(UTC))

    async def pair(conn: asyncpg.Connection, user: str) -> None:
        now, hold_id, key = int(time.time() * 1000), uuid.uuid4().hex, uuid.uuid4().hex
        async with conn.transaction(isolation="read_committed"):
            await conn.fetchrow(_RESERVE[0], key)
            await conn.fetchrow(_RESERVE[1], user, period, now)
            await conn.execute(_RESERVE[2], 1, 0, 1, now, user)
            await conn.execute(
                _RESERVE[3], hold_id, user, key, "h", period, 1, 0, None, None, now, now + 900_000
            )
            await conn.execute(_RESERVE[4], user, hold_id, "hold", 1, 0, 1, None, now, None)
        async with conn.transaction(isolation="read_committed"):
            await conn.fetchrow(_SETTLE[0], "settled", 1, 1, hold_id)
            await conn.fetchrow(_SETTLE[1], period, 0, 0, 1, now, user)
            await conn.execute(_SETTLE[2], user, hold_id, "capture", 0, 0, -1, None, now, None)

    async def caller(user: str, count: int) -> None:
        for _ in range(count):
            async with pool.acquire() as conn:
                await pair(conn, user)

    try:
        await asyncio.gather(*(caller(f"warm{i}", 2) for i in range(CALLERS)))
        start = time.perf_counter()
        await asyncio.gather(*(caller(f"user{i}", pairs // CALLERS) for i in range(CALLERS)))
        elapsed = time.perf_counter() - start
    finally:
        await pool.close()
    return (pairs // CALLERS) * CALLERS / elapsed


async def run(quick: bool) -> Result:
    pairs = 200 if quick else 5_000
    server = PostgresServer(durable=True).start()
    try:
        bare = await _bare(server.create_database(), pairs)
        ours, latencies = await _ours(server.create_database(), pairs)
    finally:
        server.stop()
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Result(
        id="ledger-pg",
        value=round(ours),
        unit="pairs/s",
        baseline=round(bare),
        ratio=round(ours / bare, 3),
        target=">= 1,000 pairs/s, p99 <= 50 ms, ratio >= 0.5",
        met=ours >= 1000 and p99 <= 50 and ours / bare >= 0.5,
        details={
            "callers": CALLERS,
            "pool": POOL,
            "pairs": pairs,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
