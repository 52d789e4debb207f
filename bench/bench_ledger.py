"""ledger: reserve + settle pairs through QuotaStore with 50 concurrent callers (each a user of
its own), versus the same SQL from one raw sqlite3 connection in a loop. Targets: >= 1,000
tx/s (a reserve and a settle are one transaction each) and p99 <= 50 ms per transaction."""

from __future__ import annotations

import asyncio
import sqlite3
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from bench.common import Result, main, percentile
from core.db import SqliteDatabase
from core.quota import Policy, QuotaStore, period_key

CALLERS = 50
POLICY = Policy(allowance=10**9)


async def _ours(path: Path, pairs: int) -> tuple[float, list[float]]:
    """Transactions per second and each transaction's latency (ms, queueing included)."""
    db = await SqliteDatabase.open(path)
    store = QuotaStore(db)
    latencies: list[float] = []
    per_caller = pairs // CALLERS

    async def caller(user: str) -> None:
        for _ in range(per_caller):
            start = time.perf_counter()
            hold = await store.reserve(
                user, amount=1, idem_key=uuid.uuid4().hex, request_hash="h", policy=POLICY
            )
            middle = time.perf_counter()
            await store.settle(hold.hold_id, 1)
            end = time.perf_counter()
            latencies.extend(((middle - start) * 1000, (end - middle) * 1000))

    try:
        await asyncio.gather(*(caller(f"warm{i}") for i in range(CALLERS)))
        latencies.clear()
        start = time.perf_counter()
        await asyncio.gather(*(caller(f"user{i}") for i in range(CALLERS)))
        elapsed = time.perf_counter() - start
    finally:
        await db.close()
    return 2 * per_caller * CALLERS / elapsed, latencies


def _raw(path: Path, pairs: int) -> float:
    """The same statements as QuotaStore.reserve and .settle, one connection, no asyncio."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    period = period_key("day", datetime.now(UTC))
    start = time.perf_counter()
    for i in range(pairs):
        user, now = f"user{i % CALLERS}", int(time.time() * 1000)
        hold_id, idem = uuid.uuid4().hex, uuid.uuid4().hex
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("SELECT hold_id FROM hold WHERE idem_key = ?", (idem,)).fetchone()
        conn.execute(
            "INSERT INTO account (user_id, period, updated_at) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id) DO NOTHING",
            (user, period, now),
        )
        conn.execute(
            "SELECT period, allowance_used, granted, allowance_override FROM account"
            " WHERE user_id = ?",
            (user,),
        ).fetchone()
        conn.execute(
            "UPDATE account SET allowance_used = allowance_used + 1, held = held + 1,"
            " updated_at = ? WHERE user_id = ?",
            (now, user),
        )
        conn.execute(
            "INSERT INTO hold (hold_id, user_id, idem_key, request_hash, period, from_allowance,"
            " from_granted, state, created_at, expires_at) VALUES (?, ?, ?, 'h', ?, 1, 0, 'held',"
            " ?, ?)",
            (hold_id, user, idem, period, now, now + 900_000),
        )
        conn.execute(
            "INSERT INTO ledger (user_id, hold_id, kind, d_allowance_used, d_held, created_at)"
            " VALUES (?, ?, 'hold', 1, 1, ?)",
            (user, hold_id, now),
        )
        conn.execute("COMMIT")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(
            "UPDATE hold SET state = 'settled', settled_amount = 1 WHERE hold_id = ?"
            " AND state = 'held' RETURNING user_id, from_allowance, from_granted, period",
            (hold_id,),
        ).fetchone()
        conn.execute("SELECT period FROM account WHERE user_id = ?", (user,)).fetchone()
        conn.execute(
            "UPDATE account SET held = held - 1, updated_at = ? WHERE user_id = ?", (now, user)
        )
        conn.execute(
            "INSERT INTO ledger (user_id, hold_id, kind, d_held, created_at)"
            " VALUES (?, ?, 'capture', -1, ?)",
            (user, hold_id, now),
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - start
    conn.close()
    return 2 * pairs / elapsed


async def run(quick: bool) -> Result:
    pairs = 200 if quick else 10_000
    with tempfile.TemporaryDirectory() as tmp:
        await (await SqliteDatabase.open(Path(tmp) / "raw.db")).close()  # the schema only
        raw = _raw(Path(tmp) / "raw.db", pairs)
        ours, latencies = await _ours(Path(tmp) / "ours.db", pairs)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    return Result(
        id="ledger",
        value=round(ours),
        unit="tx/s",
        baseline=round(raw),
        ratio=round(ours / raw, 3),
        target=">= 1,000 tx/s, p99 <= 50 ms",
        met=ours >= 1000 and p99 <= 50,
        details={
            "callers": CALLERS,
            "pairs": pairs,
            "p50_ms": round(p50, 1),
            "p99_ms": round(p99, 1),
        },
    )


if __name__ == "__main__":
    main(run, __doc__)
