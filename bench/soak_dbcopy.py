"""The move to PostgreSQL on a lived-in database: ``imagegate db copy`` of the SQLite file the
load soak left (thousands of jobs, refunds, partial charges, replays) into a throwaway
PostgreSQL server (``tests/pgserver.py``), then the copy read back through ``ImageService``:
every user's credits and ledger, and every job with its images, as in the SQLite file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from core.db import SqliteDatabase
from core.dbcopy import copy_sqlite
from core.pg import PostgresDatabase
from tests.pgserver import PostgresServer


async def run_copy(sqlite_path: Path) -> dict[str, Any]:
    """Copy and compare; returns the soak's ``db_copy_*`` figures."""
    started = time.monotonic()
    server = PostgresServer().start()
    problems: list[str] = []
    try:
        target = await PostgresDatabase.open(server.create_database(), pool_size=4)
        try:
            await target.upgrade()
            report = await copy_sqlite(sqlite_path, target)
            problems += await _compare(sqlite_path, target)
        finally:
            await target.close()
    finally:
        server.stop()
    return {
        "db_copy_rows": sum(report.rows.values()),
        "db_copy_accounts": report.accounts,
        "db_copy_mismatches": len(problems),
        "db_copy_problems": problems[:20],
        "db_copy_seconds": round(time.monotonic() - started, 1),
    }


async def _compare(sqlite_path: Path, target: PostgresDatabase) -> list[str]:
    """Every row of the tables people read, the same on both sides (beyond the sums that
    ``copy_sqlite`` itself checks before it commits)."""
    source = await SqliteDatabase.open(sqlite_path, migrate=False)
    problems = []
    try:
        for table, key in (("account", "user_id"), ("hold", "hold_id"), ("job", "job_id"),
                           ("image", "image_id"), ("ledger", "entry_id")):  # fmt: skip
            sql = f"SELECT * FROM {table} ORDER BY {key}"
            theirs = [tuple(row) for row in await source.fetchall(sql)]
            ours = [tuple(row) for row in await target.fetchall(sql)]
            if theirs != ours:
                problems.append(f"{table}: {len(ours)} rows differ from the SQLite file's")
    finally:
        await source.close()
    return problems
