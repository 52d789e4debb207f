"""The database on both backends: whole transactions, where a failing one undoes only itself;
cancellation before and after a transaction starts; versioned migrations and their status;
the choice of backend by config. SQLite's writer thread also commits in groups."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from pydantic import BaseModel

from core import ConfigError, parse_settings
from core.db import Database, SqliteDatabase, Tx, from_row, open_database
from core.pg import PostgresDatabase, pg_sql, redact
from tests.conftest import PG_URL_ENV


async def open_db(
    backend: dict[str, Any], migrate: bool | None = None, **database: Any
) -> Database:
    """Open the database a ``backend`` section (tests/conftest.py) names."""
    settings = parse_settings({"database": {**backend, **database}})
    return await open_database(settings.database, migrate=migrate)


@pytest.fixture
async def db(backend: dict[str, Any]) -> AsyncIterator[Database]:
    database = await open_db(backend)
    yield database
    await database.close()


async def _put(tx: Tx, scope: str) -> str:
    await tx.execute(
        "INSERT INTO scope_setting (scope, value, updated_at) VALUES (?, '{}', 0)", (scope,)
    )
    return scope


async def _put_then_fail(tx: Tx, scope: str) -> None:
    await _put(tx, scope)
    raise ValueError("changed my mind")


async def _scopes(db: Database) -> set[str]:
    return {row[0] for row in await db.fetchall("SELECT scope FROM scope_setting")}


async def test_transact_returns_once_committed(db: Database):
    assert await db.transact(_put, "a:1") == "a:1"
    assert await _scopes(db) == {"a:1"}  # visible to the other connections at once


async def test_a_failing_transaction_undoes_only_itself(db: Database):
    results = await asyncio.gather(
        db.transact(_put, "a:1"),
        db.transact(_put_then_fail, "a:2"),
        db.transact(_put, "a:3"),
        db.transact(_put, "a:1"),  # a constraint error is a failure like any other
        return_exceptions=True,
    )
    first, failed, third, again = results
    assert third == "a:3" and isinstance(failed, ValueError)
    # The two "a:1" run at once on PostgreSQL (a pooled connection each): either may win.
    winner, loser = (first, again) if first == "a:1" else (again, first)
    assert winner == "a:1" and isinstance(loser, db.IntegrityError)
    assert await _scopes(db) == {"a:1", "a:3"}


async def test_many_concurrent_transactions_all_commit(db: Database):
    scopes = [f"a:{i}" for i in range(300)]
    assert await asyncio.gather(*(db.transact(_put, s) for s in scopes)) == scopes
    assert await _scopes(db) == set(scopes)


async def test_rows_read_by_position_and_by_name(db: Database):
    await db.transact(_put, "a:1")
    row = await db.fetchone("SELECT scope, updated_at FROM scope_setting WHERE scope = ?", ["a:1"])
    assert (row[0], row["scope"], row["updated_at"]) == ("a:1", "a:1", 0)
    assert await db.fetchone("SELECT scope FROM scope_setting WHERE scope = ?", ["b"]) is None


class _Setting(BaseModel):
    name: str
    value: str
    updated_at: datetime
    updated_by: str | None = None


async def test_a_row_fills_a_model_by_column_name(db: Database):
    await db.transact(_put, "a:1")
    row = await db.fetchone(
        "SELECT scope AS name, value, 1700000000123 AS updated_at, 7 AS extra FROM scope_setting"
    )
    when = datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    # A time (epoch ms) becomes a datetime; a column no field names is left out.
    assert from_row(_Setting, row) == _Setting(name="a:1", value="{}", updated_at=when)
    assert from_row(_Setting, row, value="v", updated_by="ops").value == "v"


async def test_migrations_are_versioned_and_shown(backend: dict[str, Any]):
    db = await open_db(backend, migrate=False)  # as `imagegate db` opens it
    try:
        assert [m.applied_at for m in await db.migration_status()] == [None] * len(db.migrations)
        with pytest.raises(ConfigError, match="imagegate db upgrade"):
            await db.check_current()
        assert await db.upgrade() == [name for name, _ in db.migrations]
        assert await db.upgrade() == []
        status = await db.migration_status()
        assert [m.name for m in status] == [name for name, _ in db.migrations]
        assert all(m.applied_at for m in status)
        await db.check_current()
    finally:
        await db.close()


async def test_auto_migrate_false_refuses_an_outdated_schema(backend: dict[str, Any]):
    with pytest.raises(ConfigError, match="auto_migrate is false"):
        await open_db(backend, auto_migrate=False)
    db = await open_db(backend)  # the default migrates
    await db.close()
    db = await open_db(backend, auto_migrate=False)  # now current: it opens
    await db.close()


# --- SQLite's writer thread ---------------------------------------------------------------


async def test_sqlite_a_transaction_cancelled_while_queued_never_runs(tmp_path: Path):
    db = await SqliteDatabase.open(tmp_path / "db.sqlite")
    started, release = threading.Event(), threading.Event()

    async def hold_writer(tx: Tx) -> None:
        started.set()
        release.wait(5)  # blocks the writer thread, as a long transaction would

    blocker = asyncio.create_task(db.transact(hold_writer))
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.create_task(db.transact(_put, "a:never"))
    while not db.waiting():  # it is queued once its task has run up to its first wait
        await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert db.waiting() == 0
    release.set()
    await blocker
    await db.transact(_put, "a:after")
    assert await _scopes(db) == {"a:after"}
    await db.close()


async def test_sqlite_a_body_may_only_wait_on_its_transaction(tmp_path: Path):
    db = await SqliteDatabase.open(tmp_path / "db.sqlite")

    async def sleeps(tx: Tx) -> None:
        await _put(tx, "a:1")
        await asyncio.sleep(0)

    with pytest.raises(RuntimeError, match="awaited something other"):
        await db.transact(sleeps)
    assert await _scopes(db) == set()
    await db.close()


async def test_sqlite_a_closed_database_refuses_writes(tmp_path: Path):
    db = await SqliteDatabase.open(tmp_path / "db.sqlite")
    await db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await db.transact(_put, "a:1")


async def test_the_audit_migration_keeps_every_ledger_entry(backend, monkeypatch):
    """A database from before m005 keeps its entries and ids, and takes the new kind."""
    backend_class = PostgresDatabase if "url_env" in backend else SqliteDatabase
    every = backend_class.migrations
    names = [name for name, _ in every]
    monkeypatch.setattr(backend_class, "migrations", every[: names.index("m005_ledger_audit")])
    old = await open_db(backend)
    await old.transact(_old_grant, 41)
    await old.close()
    monkeypatch.setattr(backend_class, "migrations", every)

    database = await open_db(backend)
    try:
        await database.transact(_old_grant, 7)
        rows = await database.fetchall("SELECT entry_id, d_granted, actor FROM ledger")
        assert [tuple(r) for r in rows] == [(1, 41, None), (2, 7, None)]
        await database.transact(_allowance_entry)
    finally:
        await database.close()


async def _old_grant(tx: Tx, credits: int) -> None:
    await tx.execute(
        "INSERT INTO ledger (user_id, kind, d_granted, created_at) VALUES ('u', 'grant', ?, 0)",
        (credits,),
    )


async def _allowance_entry(tx: Tx) -> None:
    await tx.execute(
        "INSERT INTO ledger (user_id, kind, created_at, actor) VALUES ('u', 'allowance', 0, 'a')"
    )


# --- PostgreSQL's pool ----------------------------------------------------------------------


async def test_postgres_cancelled_while_waiting_for_a_connection_never_runs(pg_url: str):
    db = await PostgresDatabase.open(pg_url, pool_size=1)
    await db.upgrade()
    inside, release = asyncio.Event(), asyncio.Event()

    async def hold_connection(tx: Tx) -> None:
        inside.set()
        await release.wait()

    blocker = asyncio.create_task(db.transact(hold_connection))
    await inside.wait()
    queued = asyncio.create_task(db.transact(_put, "a:never"))
    while not db.waiting():  # it is queued once its task has run up to its first wait
        await asyncio.sleep(0)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    assert db.waiting() == 0
    release.set()
    await blocker
    await db.transact(_put, "a:after")
    assert await _scopes(db) == {"a:after"}
    await db.close()


async def test_postgres_cancelled_once_started_still_commits(pg_url: str):
    db = await PostgresDatabase.open(pg_url, pool_size=2)
    await db.upgrade()
    inside, release = asyncio.Event(), asyncio.Event()

    async def slow_put(tx: Tx) -> None:
        await _put(tx, "a:1")
        inside.set()
        await release.wait()
        await _put(tx, "a:2")

    call = asyncio.create_task(db.transact(slow_put))
    await inside.wait()
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    release.set()
    while await _scopes(db) != {"a:1", "a:2"}:  # it completes after its caller left
        await asyncio.sleep(0.01)
    await db.close()


async def test_postgres_a_lost_unique_key_race_is_run_again(pg_url: str):
    db = await PostgresDatabase.open(pg_url, pool_size=4)
    await db.upgrade()
    inside, release = asyncio.Event(), asyncio.Event()
    runs = []

    async def put_if_absent(tx: Tx, scope: str, wait: bool) -> str:
        runs.append(scope)
        if await tx.fetchone("SELECT 1 FROM scope_setting WHERE scope = ?", (scope,)):
            return "found"
        await _put(tx, scope)
        if wait:
            inside.set()
            await release.wait()
        return "made"

    first = asyncio.create_task(db.transact(put_if_absent, "a:1", True))
    await inside.wait()
    # Sees no row (not committed yet), inserts, waits on the first's key, loses, runs again.
    second = asyncio.create_task(db.transact(put_if_absent, "a:1", False))
    # Release only once the second waits on the first's key: released as soon as it merely
    # started, the first could commit before the second's SELECT ran, which then finds the row
    # (two runs, not three: a race the load on the machine decides).
    while not await db.fetchall(
        "SELECT 1 FROM pg_stat_activity"
        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
    ):
        await asyncio.sleep(0.01)
    release.set()
    assert (await first, await second) == ("made", "found")
    assert len(runs) == 3
    await db.close()


async def test_postgres_url_problems_are_one_line_without_the_password(
    pg_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
):
    bad = pg_url.replace("postgres@", "nobody:s3cret-pass@").replace("host=", "host=/nonexistent")
    monkeypatch.setenv(PG_URL_ENV, bad)
    with pytest.raises(ConfigError) as info:
        await open_db({"url_env": PG_URL_ENV})
    assert "$IMAGEGATE_TEST_DATABASE_URL" in info.value.message
    assert "s3cret" not in info.value.message
    monkeypatch.setenv(PG_URL_ENV, "mysql://x")
    with pytest.raises(ConfigError, match="must hold a postgresql:// URL"):
        await open_db({"url_env": PG_URL_ENV})
    monkeypatch.setenv(PG_URL_ENV, "")
    db = await open_db({"url_env": PG_URL_ENV, "path": str(tmp_path / "x.db")})
    assert db.dialect == "sqlite"  # set but empty: SQLite at path
    await db.close()


def test_placeholders_are_numbered_outside_quotes():
    assert pg_sql("SELECT ? , '?', \"a?\" WHERE x = ? AND y = ?") == (
        "SELECT $1 , '?', \"a?\" WHERE x = $2 AND y = $3"
    )
    assert redact("failed for postgresql://u:pw@h/db (pw)", "postgresql://u:pw@h/db") == (
        "failed for *** (***)"
    )


async def test_postgres_survives_a_schema_change_by_another_process(pg_url: str):
    db = await PostgresDatabase.open(pg_url, pool_size=1)
    await db.upgrade()
    await db.transact(_put, "a:1")

    async def read_all(tx: Tx) -> list[Any]:
        return await tx.fetchall("SELECT * FROM scope_setting")

    assert len(await db.transact(read_all)) == 1  # prepared, and cached on its connection
    other = await asyncpg.connect(pg_url)  # a replica that migrated first, say
    await other.execute("ALTER TABLE scope_setting ADD COLUMN note TEXT")
    await other.close()
    rows = await db.transact(read_all)  # the cached plan is stale: prepared again
    assert [tuple(r) for r in rows] == [("a:1", "{}", None, 0, None)]
    await db.close()
