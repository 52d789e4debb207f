"""The SQLite database: connection settings, ordered migrations, and one write path.

Facts that shape this module (see reference/core-and-quotas.md, B3 and B4):
- WAL lets readers and the single writer work at once; all processes must be on one host.
- A deferred transaction that reads then writes fails at once with SQLITE_BUSY under
  contention, whatever the busy timeout; every write here starts with ``BEGIN IMMEDIATE``.
- Thread hand-offs cost far more than SQLite itself (B4: about five awaits per transaction
  through aiosqlite). So a write is a plain function of a ``sqlite3.Connection`` that one
  writer thread runs whole, in one hand-off; and the writer commits whatever has queued up
  while it was busy as one group: each function in its own SAVEPOINT (so a failing one undoes
  only itself), one COMMIT and one fsync for the group, and no caller hears back before that
  COMMIT. Under load that is what keeps 1,000 concurrent jobs from queueing behind 5,000
  fsyncs (``make bench``: ledger, fan-out). Reads go through aiosqlite on a second connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import sqlite3
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from .errors import ConfigError

T = TypeVar("T")

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


migration(
    "m004_api_tokens",
    """
    CREATE TABLE api_token (
      prefix        TEXT PRIMARY KEY,
      kind          TEXT NOT NULL,
      user_id       TEXT NOT NULL,
      sha256        TEXT NOT NULL,
      label         TEXT NOT NULL DEFAULT '',
      created_at    INTEGER NOT NULL,
      last_used_at  INTEGER,
      revoked_at    INTEGER
    );
    CREATE INDEX api_token_kind ON api_token(kind, user_id);
    """,
)


# The ledger becomes the whole audit trail: allowance changes are entries of their own (no
# credits move), and ``actor`` says who made an operator's change. SQLite cannot alter a CHECK,
# so the table is rebuilt (entry ids, and with them AUTOINCREMENT's counter, are kept).
migration(
    "m005_ledger_audit",
    """
    CREATE TABLE ledger_new (
      entry_id        INTEGER PRIMARY KEY AUTOINCREMENT,
      user_id         TEXT NOT NULL,
      hold_id         TEXT,
      kind            TEXT NOT NULL CHECK (kind IN
                        ('grant','reset','hold','capture','release','expire','adjust',
                         'allowance')),
      d_allowance_used INTEGER NOT NULL DEFAULT 0,
      d_granted       INTEGER NOT NULL DEFAULT 0,
      d_held          INTEGER NOT NULL DEFAULT 0,
      reason          TEXT,
      created_at      INTEGER NOT NULL,
      actor           TEXT,
      UNIQUE (hold_id, kind)
    );
    INSERT INTO ledger_new (entry_id, user_id, hold_id, kind, d_allowance_used, d_granted,
      d_held, reason, created_at)
      SELECT entry_id, user_id, hold_id, kind, d_allowance_used, d_granted, d_held, reason,
      created_at FROM ledger;
    DROP TABLE ledger;
    ALTER TABLE ledger_new RENAME TO ledger;
    CREATE INDEX ledger_user ON ledger(user_id, entry_id);
    """,
)


migration(
    "m006_image_bytes_lost",
    """
    ALTER TABLE image ADD COLUMN bytes INTEGER;
    ALTER TABLE image ADD COLUMN lost TEXT;
    CREATE INDEX image_created ON image(created_at);
    """,
)


class Database:
    """One SQLite file: a writer thread that commits in groups, and a read connection.

    Every write is ``await db.transact(fn, *args)``: ``fn(conn, *args)`` runs in the writer
    thread inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` and its return value (or exception) comes
    back once committed. ``fn`` must be quick and synchronous: no network I/O, no awaits.
    """

    def __init__(self, writer: _Writer, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader

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
            conn = await asyncio.to_thread(_connect_writer, path, busy_timeout_ms, synchronous)
            writer = _Writer(conn)
            try:
                reader = await _connect(path, busy_timeout_ms, synchronous)
            except BaseException:
                await writer.close()
                raise
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the database {path}: {exc}") from None
        db = cls(writer, reader)
        try:
            await db.transact(_migrate)
        except BaseException:
            await db.close()
            raise
        return db

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()

    async def transact(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(conn, *args)`` as one write transaction; returns what ``fn`` returns.

        Raises:
            Whatever ``fn`` raised (its writes are undone), or ``sqlite3.Error`` when the
            transaction could not be committed (nothing of it was written).
        """
        return await self._writer.submit(fn, args)

    async def fetchall(self, sql: str, params: tuple | dict = ()) -> list[sqlite3.Row]:
        """Run a read query on the read connection (one thread hand-off)."""
        return list(await self._reader.execute_fetchall(sql, params))

    async def fetchone(self, sql: str, params: tuple | dict = ()) -> sqlite3.Row | None:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None


_QUEUED, _RUNNING, _CANCELLED = "queued", "running", "cancelled"
_MAX_GROUP = 256  # bounds how long one group holds SQLite's write lock


class _Op:
    __slots__ = ("fn", "args", "future", "loop", "state")

    def __init__(self, fn: Callable[..., Any], args: tuple, loop: asyncio.AbstractEventLoop):
        self.fn, self.args, self.loop = fn, args, loop
        self.future: asyncio.Future[Any] = loop.create_future()
        self.state = _QUEUED


class _Writer:
    """The thread that owns the write connection and commits queued transactions in groups."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn
        self._queue: queue.SimpleQueue[_Op | None] = queue.SimpleQueue()
        self._state_lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._serve, name="imagegate-db-writer", daemon=True)
        self._thread.start()

    async def submit(self, fn: Callable[..., Any], args: tuple) -> Any:
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        op = _Op(fn, args, asyncio.get_running_loop())
        self._queue.put(op)
        try:
            return await op.future
        except asyncio.CancelledError:
            # Not started yet: it never will be. Already running: it completes regardless,
            # as a transaction whose COMMIT was under way always did.
            with self._state_lock:
                if op.state == _QUEUED:
                    op.state = _CANCELLED
            raise

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    def _serve(self) -> None:
        try:
            while True:
                op = self._queue.get()
                if op is None:
                    return
                group = [op]
                while len(group) < _MAX_GROUP:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        self._queue.put(None)  # finish this group, then stop
                        break
                    group.append(more)
                self._commit(group)
        finally:
            self._conn.close()

    def _commit(self, group: list[_Op]) -> None:
        with self._state_lock:
            live = [op for op in group if op.state == _QUEUED]
            for op in live:
                op.state = _RUNNING
        if not live:
            return
        conn = self._conn
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in live:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, op.fn(conn, *op.args)))
                except BaseException as exc:  # handed to the caller, who re-raises it
                    conn.execute("ROLLBACK TO op")
                    outcomes.append((False, exc))
                conn.execute("RELEASE op")
            conn.execute("COMMIT")
        except Exception as exc:  # BEGIN, ROLLBACK TO or COMMIT failed: nothing was written
            if conn.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    conn.execute("ROLLBACK")
            outcomes = [(False, exc)] * len(live)
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Op, tuple[bool, Any]]]]
        by_loop = defaultdict(list)
        for op, outcome in zip(live, outcomes, strict=True):
            by_loop[op.loop].append((op, outcome))
        for loop, results in by_loop.items():
            try:
                loop.call_soon_threadsafe(_deliver, results)
            except RuntimeError:  # that event loop is closed; nobody is waiting any more
                pass


def _deliver(results: list[tuple[_Op, tuple[bool, Any]]]) -> None:
    for op, (ok, value) in results:
        if op.future.done():  # the caller was cancelled
            continue
        if ok:
            op.future.set_result(value)
        else:
            op.future.set_exception(value)


def _migrate(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)")
    done = {row[0] for row in conn.execute("SELECT name FROM _migrations")}
    for name, sql in MIGRATIONS:
        if name in done:
            continue
        for statement in _statements(sql):
            conn.execute(statement)
        conn.execute("INSERT INTO _migrations VALUES (?, datetime('now'))", (name,))


def _pragmas(conn: sqlite3.Connection, busy_timeout_ms: int, synchronous: str) -> None:
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
    conn.execute("PRAGMA foreign_keys=ON")


def _connect_writer(path: Path, busy_timeout_ms: int, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(
        path, isolation_level=None, timeout=busy_timeout_ms / 1000, check_same_thread=False
    )
    conn.row_factory = sqlite3.Row
    _pragmas(conn, busy_timeout_ms, synchronous)
    return conn


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
