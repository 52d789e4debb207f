"""The database's write path: whole transactions in the writer thread, committed in groups,
where a failing transaction undoes only itself."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from core import db as db_module
from core.db import Database


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[Database]:
    database = await Database.open(tmp_path / "db.sqlite")
    yield database
    await database.close()


def _put(conn: sqlite3.Connection, scope: str) -> str:
    conn.execute(
        "INSERT INTO scope_setting (scope, value, updated_at) VALUES (?, '{}', 0)", (scope,)
    )
    return scope


def _put_then_fail(conn: sqlite3.Connection, scope: str) -> None:
    _put(conn, scope)
    raise ValueError("changed my mind")


async def _scopes(db: Database) -> set[str]:
    return {row[0] for row in await db.fetchall("SELECT scope FROM scope_setting")}


async def test_transact_returns_once_committed(db: Database):
    assert await db.transact(_put, "a:1") == "a:1"
    assert await _scopes(db) == {"a:1"}  # visible to the other connection at once


async def test_a_failing_transaction_undoes_only_itself(db: Database):
    results = await asyncio.gather(
        db.transact(_put, "a:1"),
        db.transact(_put_then_fail, "a:2"),
        db.transact(_put, "a:3"),
        db.transact(_put, "a:1"),  # a constraint error is a failure like any other
        return_exceptions=True,
    )
    assert results[0] == "a:1" and results[2] == "a:3"
    assert isinstance(results[1], ValueError)
    assert isinstance(results[3], sqlite3.IntegrityError)
    assert await _scopes(db) == {"a:1", "a:3"}


async def test_many_concurrent_transactions_all_commit(db: Database):
    scopes = [f"a:{i}" for i in range(300)]
    assert await asyncio.gather(*(db.transact(_put, s) for s in scopes)) == scopes
    assert await _scopes(db) == set(scopes)


async def test_a_transaction_cancelled_while_queued_never_runs(db: Database):
    started, release = threading.Event(), threading.Event()

    def hold_writer(conn: sqlite3.Connection) -> None:
        started.set()
        release.wait(5)

    blocker = asyncio.create_task(db.transact(hold_writer))
    await asyncio.to_thread(started.wait, 5)
    queued = asyncio.create_task(db.transact(_put, "a:never"))
    await asyncio.sleep(0.01)
    queued.cancel()
    with pytest.raises(asyncio.CancelledError):
        await queued
    release.set()
    await blocker
    await db.transact(_put, "a:after")
    assert await _scopes(db) == {"a:after"}


async def test_a_closed_database_refuses_writes(tmp_path: Path):
    db = await Database.open(tmp_path / "db.sqlite")
    await db.close()
    with pytest.raises(sqlite3.ProgrammingError):
        await db.transact(_put, "a:1")


async def test_the_audit_migration_keeps_every_ledger_entry(tmp_path: Path, monkeypatch):
    """A database from before m005 keeps its entries and ids, and takes the new kind."""
    path = tmp_path / "old.sqlite"
    names = [name for name, _ in db_module.MIGRATIONS]
    before = db_module.MIGRATIONS[: names.index("m005_ledger_audit")]
    monkeypatch.setattr(db_module, "MIGRATIONS", before)
    old = await Database.open(path)
    await old.transact(_old_grant, 41)
    await old.close()
    monkeypatch.undo()

    database = await Database.open(path)
    try:
        await database.transact(_old_grant, 7)
        rows = await database.fetchall("SELECT entry_id, d_granted, actor FROM ledger")
        assert [tuple(r) for r in rows] == [(1, 41, None), (2, 7, None)]
        await database.transact(_allowance_entry)
    finally:
        await database.close()


def _old_grant(conn: sqlite3.Connection, credits: int) -> None:
    conn.execute(
        "INSERT INTO ledger (user_id, kind, d_granted, created_at) VALUES ('u', 'grant', ?, 0)",
        (credits,),
    )


def _allowance_entry(conn: sqlite3.Connection) -> None:
    conn.execute(
        "INSERT INTO ledger (user_id, kind, created_at, actor) VALUES ('u', 'allowance', 0, 'a')"
    )
