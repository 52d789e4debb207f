"""The SQLite database: connection settings, ordered migrations, and one write path.

Facts that shape this module (see reference/core-and-quotas.md, B3):
- WAL lets readers and the single writer work at once; all processes must be on one host.
- A deferred transaction that reads then writes fails at once with SQLITE_BUSY under
  contention, whatever the busy timeout; every write here starts with ``BEGIN IMMEDIATE``.
- Coroutines sharing one aiosqlite connection share its transaction, so writes in this process
  are serialised by a lock and reads use a second connection.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import aiosqlite

from .errors import ConfigError

MIN_SQLITE = (3, 35, 0)  # RETURNING

MIGRATIONS: list[tuple[str, str]] = []


def migration(name: str, sql: str) -> None:
    """Register a schema step; steps run once each, in the order they are registered."""
    MIGRATIONS.append((name, sql))


migration(
    "m001_jobs",
    """
    CREATE TABLE job (
      job_id      TEXT PRIMARY KEY,
      user_id     TEXT NOT NULL,
      operation   TEXT NOT NULL,
      model       TEXT NOT NULL,
      status      TEXT NOT NULL,
      request     TEXT NOT NULL,
      hold_id     TEXT,
      credits_charged INTEGER NOT NULL DEFAULT 0,
      warnings    TEXT NOT NULL DEFAULT '[]',
      error       TEXT,
      owner       TEXT,
      created_at  INTEGER NOT NULL,
      finished_at INTEGER
    );
    CREATE INDEX job_user ON job(user_id, created_at);
    CREATE TABLE image (
      image_id    TEXT PRIMARY KEY,
      job_id      TEXT REFERENCES job(job_id),
      idx         INTEGER NOT NULL,
      user_id     TEXT NOT NULL,
      sha256      TEXT NOT NULL,
      mime        TEXT NOT NULL,
      width       INTEGER NOT NULL,
      height      INTEGER NOT NULL,
      seed        INTEGER,
      model       TEXT NOT NULL,
      provider_image_id TEXT,
      meta        TEXT NOT NULL DEFAULT '{}',
      created_at  INTEGER NOT NULL
    );
    CREATE INDEX image_job ON image(job_id, idx);
    """,
)

migration(
    "m002_quota",
    """
    CREATE TABLE account (
      user_id         TEXT PRIMARY KEY,
      period          TEXT NOT NULL,
      allowance_used  INTEGER NOT NULL DEFAULT 0 CHECK (allowance_used >= 0),
      granted         INTEGER NOT NULL DEFAULT 0 CHECK (granted >= 0),
      held            INTEGER NOT NULL DEFAULT 0 CHECK (held >= 0),
      allowance_override INTEGER CHECK (allowance_override >= 0),
      updated_at      INTEGER NOT NULL
    );
    CREATE TABLE hold (
      hold_id        TEXT PRIMARY KEY,
      user_id        TEXT NOT NULL REFERENCES account(user_id),
      idem_key       TEXT NOT NULL UNIQUE,
      request_hash   TEXT NOT NULL,
      period         TEXT NOT NULL,
      from_allowance INTEGER NOT NULL,
      from_granted   INTEGER NOT NULL,
      state          TEXT NOT NULL CHECK (state IN ('held','settled','released','expired')),
      settled_amount INTEGER,
      job_id         TEXT,
      owner          TEXT,
      created_at     INTEGER NOT NULL,
      expires_at     INTEGER NOT NULL
    );
    CREATE INDEX hold_open ON hold(user_id) WHERE state = 'held';
    CREATE INDEX hold_expiry ON hold(expires_at) WHERE state = 'held';
    CREATE TABLE ledger (
      entry_id        INTEGER PRIMARY KEY AUTOINCREMENT,
      user_id         TEXT NOT NULL,
      hold_id         TEXT,
      kind            TEXT NOT NULL CHECK (kind IN
                        ('grant','reset','hold','capture','release','expire','adjust')),
      d_allowance_used INTEGER NOT NULL DEFAULT 0,
      d_granted       INTEGER NOT NULL DEFAULT 0,
      d_held          INTEGER NOT NULL DEFAULT 0,
      reason          TEXT,
      created_at      INTEGER NOT NULL,
      UNIQUE (hold_id, kind)
    );
    CREATE INDEX ledger_user ON ledger(user_id, entry_id);
    CREATE TABLE rate_bucket (
      user_id TEXT NOT NULL,
      name    TEXT NOT NULL,
      tat_ms  INTEGER NOT NULL,
      PRIMARY KEY (user_id, name)
    );
    """,
)


migration(
    "m003_scope_settings",
    """
    CREATE TABLE scope_setting (
      scope       TEXT PRIMARY KEY,
      value       TEXT NOT NULL,
      updated_by  TEXT,
      updated_at  INTEGER NOT NULL
    );
    """,
)


class Database:
    """One SQLite file: a write connection behind a lock and a read connection.

    Use ``async with db.write() as conn`` for every write: it runs ``BEGIN IMMEDIATE`` and
    commits, or rolls back on any exception. Never do network I/O inside it.
    """

    def __init__(self, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader
        self._lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path, *, busy_timeout_ms: int = 5000, synchronous: str = "FULL"
    ) -> Database:
        """Open (creating if needed) and migrate the database at ``path``.

        Raises:
            ConfigError: the file cannot be opened or SQLite is too old.
        """
        if sqlite3.sqlite_version_info < MIN_SQLITE:
            raise ConfigError(f"SQLite {sqlite3.sqlite_version} is too old; 3.35 or newer needed")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer = await _connect(path, busy_timeout_ms, synchronous)
            reader = await _connect(path, busy_timeout_ms, synchronous)
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the database {path}: {exc}") from None
        db = cls(writer, reader)
        await db._migrate()
        return db

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()

    @asynccontextmanager
    async def write(self) -> AsyncIterator[aiosqlite.Connection]:
        """A short ``BEGIN IMMEDIATE`` transaction on the write connection."""
        async with self._lock:
            await self._writer.execute("BEGIN IMMEDIATE")
            try:
                yield self._writer
            except BaseException:
                await self._writer.execute("ROLLBACK")
                raise
            await self._writer.execute("COMMIT")

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """Run a read query on the read connection."""
        async with self._reader.execute(sql, params) as cursor:
            return list(await cursor.fetchall())

    async def fetchone(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        async with self._reader.execute(sql, params) as cursor:
            return await cursor.fetchone()

    async def _migrate(self) -> None:
        async with self.write() as conn:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
            async with conn.execute("SELECT name FROM _migrations") as cursor:
                done = {row[0] for row in await cursor.fetchall()}
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                for statement in _statements(sql):
                    await conn.execute(statement)
                await conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))


async def _connect(path: Path, busy_timeout_ms: int, synchronous: str) -> aiosqlite.Connection:
    conn = await aiosqlite.connect(path, isolation_level=None, timeout=busy_timeout_ms / 1000)
    conn.row_factory = sqlite3.Row
    await conn.execute("PRAGMA journal_mode=WAL")
    await conn.execute(f"PRAGMA synchronous={synchronous}")
    await conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    await conn.execute("PRAGMA foreign_keys=ON")
    return conn


def _statements(sql: str) -> list[str]:
    return [part.strip() for part in sql.split(";") if part.strip()]
