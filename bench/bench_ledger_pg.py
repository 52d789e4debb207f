"""ledger-pg: reserve + settle pairs through QuotaStore on PostgreSQL with 50 concurrent callers
(each a user of its own, a pool of 10 connections: ``[database] pool_size``'s default), versus
the same statements in the same transactions through bare asyncpg from 50 callers on a pool of
the same size. The server is a throwaway one started for the run (``tests/pgserver.py``) with
the settings a deployment gets by default where it matters here: fsync and synchronous_commit
on, no commit_delay (group commit as it comes); on the same machine. Each side runs twice, in
the order bare, ours, ours, bare, each time on a fresh schema, so neither gains from going
second; the figure is each side's pairs over its total time. Both send, per pair, 8
statements: BEGIN, the idempotency lookup, the account upsert, the hold's writes as one
statement, COMMIT; BEGIN, the settle as one statement, COMMIT. Targets: >= 1,000 pairs/s,
p99 <= 50 ms per transaction, ratio >= 0.5."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import UTC, datetime

import asyncpg

from bench.common import Result, main, percentile
from core.pg import PostgresDatabase, combined_sql, pg_sql

# The very statements QuotaStore.reserve and .settle send for these calls (private to
# core.quota, read here so that the baseline cannot drift from them).
from core.quota import (
    _ACCOUNT_SQL,
    _CLOSE_HOLD_PG,
    _EXISTING_SQL,
    _HOLD_SQL,
    _LEDGER_SQL,
    _TAKE_SQL,
    Policy,
    QuotaStore,
    period_key,
)
from tests.pgserver import PostgresServer

CALLERS = 50
POOL = 10
POLICY = Policy(allowance=10**9)
ROUNDS = ("bare", "ours", "ours", "bare")

_EXISTING, _ACCOUNT = pg_sql(_EXISTING_SQL), pg_sql(_ACCOUNT_SQL)
_WRITES = combined_sql((_TAKE_SQL, _HOLD_SQL, _LEDGER_SQL))
_CLOSE = pg_sql(_CLOSE_HOLD_PG)


async def _ours(url: str, pairs: int, latencies: list[float]) -> float:
    """Pairs per second; appends each transaction's latency (ms, waiting for a connection
    included)."""
    db = await PostgresDatabase.open(url, pool_size=POOL)
    await db.upgrade()
    store = QuotaStore(db)
    measured: list[float] = []

    async def caller(user: str, count: int) -> None:
        for _ in range(count):
            start = time.perf_counter()
            hold = await store.reserve(
                user, amount=1, idem_key=uuid.uuid4().hex, request_hash="h", policy=POLICY
            )
            middle = time.perf_counter()
            await store.settle(hold.hold_id, 1)
            end = time.perf_counter()
            measured.extend(((middle - start) * 1000, (end - middle) * 1000))

    try:
        await asyncio.gather(*(caller(f"warm{i}", 2) for i in range(CALLERS)))
        measured.clear()
        start = time.perf_counter()
        await asyncio.gather(*(caller(f"user{i}", pairs // CALLERS) for i in range(CALLERS)))
        elapsed = time.perf_counter() - start
        assert await store.check_ledger() == []
    finally:
        await db.close()
    latencies.extend(measured)
    return (pairs // CALLERS) * CALLERS / elapsed


async def _keep_session(conn: asyncpg.Connection) -> None:
    """No reset query on release, as ``core.pg``'s pool (the statements stay the same)."""


async def _pair(conn: asyncpg.Connection, user: str, period: str) -> None:
    """One reserve and one settle of 1 credit: ``_reserve`` and ``_close_hold``'s statements
    with the values they send for these calls."""
    now, hold_id, key = int(time.time() * 1000), uuid.uuid4().hex, uuid.uuid4().hex
    async with conn.transaction(isolation="read_committed"):
        await conn.fetchrow(_EXISTING, key)
        await conn.fetchrow(_ACCOUNT, user, period, now)
        take = (1, 0, 1, now, user)
        hold = (hold_id, user, key, "h", period, 1, 0, None, None, now, now + 900_000)
        entry = (user, hold_id, "hold", 1, 0, 1, 0, None, now, None)
        await conn.execute(_WRITES, *take, *hold, *entry)
    async with conn.transaction(isolation="read_committed"):
        close = ("settled", 1, 1, hold_id, now, hold_id, now, hold_id, "release", now)
        await conn.fetchrow(_CLOSE, *close)


async def _bare(url: str, pairs: int) -> float:
    """The same statements, transactions and concurrency through asyncpg alone."""
    db = await PostgresDatabase.open(url, pool_size=1)
    await db.upgrade()  # the schema only
    await db.close()
    pool = await asyncpg.create_pool(url, min_size=POOL, max_size=POOL, reset=_keep_session)
    period = period_key("day", datetime.now(UTC))

    async def caller(user: str, count: int) -> None:
        for _ in range(count):
            async with pool.acquire() as conn:
                await _pair(conn, user, period)

    try:
        await asyncio.gather(*(caller(f"warm{i}", 2) for i in range(CALLERS)))
        start = time.perf_counter()
        await asyncio.gather(*(caller(f"user{i}", pairs // CALLERS) for i in range(CALLERS)))
        elapsed = time.perf_counter() - start
    finally:
        await pool.close()
    await _check(url)  # the baseline did the same work: its ledger sums to its accounts
    return (pairs // CALLERS) * CALLERS / elapsed


async def _check(url: str) -> None:
    db = await PostgresDatabase.open(url, pool_size=1)
    try:
        assert await QuotaStore(db).check_ledger() == []
    finally:
        await db.close()


async def _rounds(server: PostgresServer, pairs: int) -> tuple[dict[str, list[float]], list[float]]:
    """Pairs/s of each round, by side, and every transaction latency of ours."""
    rates: dict[str, list[float]] = {"bare": [], "ours": []}
    latencies: list[float] = []
    for side in ROUNDS:
        url = server.create_database()
        rate = await (_bare(url, pairs) if side == "bare" else _ours(url, pairs, latencies))
        rates[side].append(rate)
        server.drop_database(url)
    return rates, latencies


def _overall(rates: list[float]) -> float:
    """Pairs over the total time of equal-sized rounds (the harmonic mean of their rates)."""
    return len(rates) / sum(1 / rate for rate in rates)


async def run(quick: bool) -> Result:
    pairs = 200 if quick else 5_000
    load_before = os.getloadavg()[0]
    server = PostgresServer(durable=True).start()
    try:
        rates, latencies = await _rounds(server, pairs)
    finally:
        server.stop()
    ours, bare = _overall(rates["ours"]), _overall(rates["bare"])
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
            "pairs": f"{len(ROUNDS) // 2} x {pairs} each",
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
            "ours_pairs_s": [round(rate) for rate in rates["ours"]],
            "bare_pairs_s": [round(rate) for rate in rates["bare"]],
            "load_1m_before": round(load_before, 2),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
