"""The database: the backend-neutral interface, the choice of backend, and SQLite.

Two backends share one interface (``Database``) and one set of transaction bodies:
- SQLite (this module), the embedded default: one file, every process on one host.
- PostgreSQL (``core.pg``), chosen when ``[database] url_env`` names a set variable: one
  ledger shared by processes on many hosts (MCP replicas, Discord shards).

A transaction body is ``async def body(tx, *args)`` that awaits only ``tx``'s methods
(``fetchone``, ``fetchall``, ``execute``, ``executemany``, ``execute_all``), with ``?``
placeholders and SQL that both engines accept. The schema is written once for both
(``core.schema``); SQL that only one engine accepts stays in its backend's module. (One
exception: where a PostgreSQL round trip per step is what a hot path costs, a body may send
that path's steps as one PostgreSQL statement, ``tx.dialect`` telling it which;
``core.quota`` closes holds so.) Such a body never waits on anything else, so SQLite runs it
to completion in its writer thread with no event loop
(``run_body``), and PostgreSQL awaits it on a pooled connection.

SQLite facts that shape the SQLite backend (see reference/core-and-quotas.md, B3 and B4):
- WAL lets readers and the single writer work at once; all processes must be on one host.
  Which of them are alive is decided by their leases in the ``instance`` table (core.leases).
- A deferred transaction that reads then writes fails at once with SQLITE_BUSY under
  contention, whatever the busy timeout; every write here starts with ``BEGIN IMMEDIATE``.
- Thread hand-offs cost far more than SQLite itself (B4: about five awaits per transaction
  through aiosqlite). So a write is a body that one writer thread runs whole, in one
  hand-off; and the writer commits whatever has queued up while it was busy as one group:
  each body in its own SAVEPOINT (so a failing one undoes only itself), one COMMIT and one
  fsync for the group, and no caller hears back before that COMMIT. Under load that is what
  keeps 1,000 concurrent jobs from queueing behind 5,000 fsyncs (``make bench``: ledger,
  fan-out). Reads go through aiosqlite on a second connection.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import functools
import queue
import sqlite3
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeVar, get_args, overload

import aiosqlite
from pydantic import BaseModel

from . import schema
from .errors import ConfigError

if TYPE_CHECKING:
    from .settings import DatabaseSettings

T = TypeVar("T")
M = TypeVar("M", bound=BaseModel)

MIN_SQLITE = (3, 35, 0)  # RETURNING

Params = Sequence[Any]


@overload
def from_ms(ms: int) -> datetime: ...
@overload
def from_ms(ms: int | None) -> datetime | None: ...
def from_ms(ms: int | None) -> datetime | None:
    """A time as the tables keep it (epoch milliseconds) as a UTC datetime; None stays None."""
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


def from_row(model: type[M], row: Any, **values: Any) -> M:
    """A ``model`` from a row read back: each column named as one of its fields fills it (a
    time, for a datetime field, through ``from_ms``); ``values`` fill the other fields, or
    replace what a column gave."""
    times, fields = _fields(model)
    data = {k: from_ms(v) if k in times else v for k, v in dict(row).items() if k in fields}
    return model(**(data | values))


@functools.cache
def _fields(model: type[BaseModel]) -> tuple[frozenset[str], frozenset[str]]:
    """(the datetime fields, every field) of ``model``."""
    every = model.model_fields
    times = (n for n, f in every.items() if datetime in (f.annotation, *get_args(f.annotation)))
    return frozenset(times), frozenset(every)


class Tx(Protocol):
    """One open write transaction, as a transaction body sees it (``?`` placeholders)."""

    dialect: str  # "sqlite" or "postgresql"

    async def fetchone(self, sql: str, params: Params = ()) -> Any: ...

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]: ...

    async def execute(self, sql: str, params: Params = ()) -> int:
        """Run one statement; returns the number of rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None: ...

    async def execute_all(self, statements: Sequence[tuple[str, Params]]) -> None:
        """Run writes (INSERT, UPDATE, DELETE without RETURNING), in one trip to the server
        where the backend has one (PostgreSQL: one statement). None may depend on another's
        changes: on PostgreSQL each sees the database as it was before all of them."""
        ...


Body = Callable[..., Coroutine[Any, Any, T]]


@dataclass(frozen=True)
class MigrationState:
    """One schema step, as ``imagegate db status`` shows it."""

    name: str
    applied_at: str | None  # UTC, "YYYY-MM-DD HH:MM:SS"; None while pending


class Database(abc.ABC):
    """The interface both backends offer; rows read back support ``row[0]`` and
    ``row["column"]``.

    Every write is ``await db.transact(body, *args)``: ``body(tx, *args)`` runs as one
    transaction and its return value (or exception) comes back once committed. A body must be
    quick and touch nothing but ``tx``: no network I/O, no other awaits. It may be run more
    than once (PostgreSQL retries one that lost a race, see ``core.pg``), so it must not
    change anything outside the database. A caller cancelled while its transaction waits to
    start cancels it; once started, it completes (committed or not) regardless.
    """

    dialect: ClassVar[str]
    #: What a broken constraint (unique key, check) raises from ``transact``.
    IntegrityError: ClassVar[type[Exception]]
    #: The schema's steps (``core.schema``), as (name, statements) in this backend's SQL.
    migrations: ClassVar[list[tuple[str, list[str]]]]

    @abc.abstractmethod
    async def transact(self, body: Body[T], *args: Any) -> T:
        """Run ``body(tx, *args)`` as one write transaction; returns what it returns.

        Raises:
            Whatever ``body`` raised (its writes are undone), or the backend's error when the
            transaction could not be committed (nothing of it was written).
        """

    @abc.abstractmethod
    def waiting(self) -> int:
        """Transactions submitted and not started yet (queued behind the writer, or waiting
        for a pooled connection): how far writes are backed up right now."""

    @abc.abstractmethod
    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """Run a read query outside any write transaction."""

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def _applied(self) -> dict[str, str]:
        """Applied migration names and when (empty for a new database)."""

    @abc.abstractmethod
    async def upgrade(self) -> list[str]:
        """Apply the pending migrations in order; returns their names (empty: up to date)."""

    async def migration_status(self) -> list[MigrationState]:
        """Every schema step this version knows, applied or pending, in order."""
        applied = await self._applied()
        known = [MigrationState(name, applied.get(name)) for name, _ in self.migrations]
        unknown = sorted(set(applied) - {name for name, _ in self.migrations})
        return known + [MigrationState(name, applied[name]) for name in unknown]

    async def check_current(self) -> None:
        """Refuse a schema older than this version (``auto_migrate = false``).

        Raises:
            ConfigError: naming the pending steps and the command that applies them.
        """
        pending = [m.name for m in await self.migration_status() if m.applied_at is None]
        if pending:
            raise ConfigError(
                f"the database needs {len(pending)} schema migration(s) ({', '.join(pending)})"
                " and [database] auto_migrate is false; run `imagegate db upgrade` first"
            )


async def open_database(settings: DatabaseSettings, *, migrate: bool | None = None) -> Database:
    """Open the configured database: PostgreSQL when ``url_env`` names a set variable, else
    SQLite at ``path``. ``migrate``: apply pending migrations (True), refuse to open an
    outdated schema (None with ``auto_migrate = false``), or neither (False, for ``imagegate
    db``); None follows ``auto_migrate``.

    Raises:
        ConfigError: the database cannot be reached or opened, or its schema is outdated.
    """
    url = settings.url()
    db: Database
    if url is not None:
        from .pg import PostgresDatabase  # asyncpg is imported only by who needs it

        db = await PostgresDatabase.open(
            url, pool_size=settings.pool_size, source=f"${settings.url_env}"
        )
    else:
        db = await SqliteDatabase.open(
            settings.path,
            busy_timeout_ms=settings.busy_timeout_ms,
            synchronous=settings.synchronous,
            migrate=False,
        )
    try:
        if migrate or (migrate is None and settings.auto_migrate):
            await db.upgrade()
        elif migrate is None:
            await db.check_current()
    except BaseException:
        await db.close()
        raise
    return db


def skip_locked(tx: Tx, table: str) -> str:
    """The end of a SELECT that locks the rows of ``table`` (a name or alias) it returns and
    leaves out those another transaction has locked: on PostgreSQL. SQLite has one writer at
    a time, so nothing is ever locked under it (and it knows no such clause)."""
    return f" FOR UPDATE OF {table} SKIP LOCKED" if tx.dialect == "postgresql" else ""


def run_body(body: Coroutine[Any, Any, T]) -> T:
    """Run a transaction body to its end without an event loop: it awaits only ``Tx`` methods
    that finish at once (SQLite's), so one ``send`` completes it.

    Raises:
        Whatever the body raised; RuntimeError when it tried to wait on something else.
    """
    try:
        body.send(None)
    except StopIteration as done:
        return done.value
    body.close()
    raise RuntimeError("a transaction body awaited something other than its transaction")


class SqliteTx:
    """``Tx`` over the writer thread's connection: every call finishes at once."""

    __slots__ = ("conn",)
    dialect = "sqlite"

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return self.conn.execute(sql, params).fetchall()

    async def execute(self, sql: str, params: Params = ()) -> int:
        return self.conn.execute(sql, params).rowcount

    async def executemany(self, sql: str, rows: Sequence[Params]) -> None:
        self.conn.executemany(sql, rows)

    async def execute_all(self, statements: Sequence[tuple[str, Params]]) -> None:
        for sql, params in statements:
            self.conn.execute(sql, params)


class SqliteDatabase(Database):
    """One SQLite file: a writer thread that commits in groups, and a read connection."""

    dialect = "sqlite"
    IntegrityError = sqlite3.IntegrityError
    migrations = schema.migrations("sqlite")

    def __init__(self, writer: _Writer, reader: aiosqlite.Connection) -> None:
        self._writer = writer
        self._reader = reader

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        busy_timeout_ms: int = 5000,
        synchronous: str = "FULL",
        migrate: bool = True,
    ) -> SqliteDatabase:
        """Open (creating if needed) the database at ``path``; ``migrate`` brings its schema up
        to date.

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
        if migrate:
            try:
                await db.upgrade()
            except BaseException:
                await db.close()
                raise
        return db

    async def close(self) -> None:
        await self._writer.close()
        await self._reader.close()

    async def transact(self, body: Body[T], *args: Any) -> T:
        return await self._writer.submit(body, args)

    def waiting(self) -> int:
        return self._writer.waiting

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        """Run a read query on the read connection (one thread hand-off)."""
        return list(await self._reader.execute_fetchall(sql, params))

    async def _applied(self) -> dict[str, str]:
        table = await self.fetchone(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_migrations'"
        )
        if table is None:
            return {}
        return {row[0]: row[1] for row in await self.fetchall("SELECT * FROM _migrations")}

    async def upgrade(self) -> list[str]:
        return await self.transact(apply_migrations, self.migrations, "datetime('now')")

    async def tables(self) -> dict[str, tuple[list[str], set[str]]]:
        """Every table of the schema (not ``_migrations``) with its columns and the tables it
        references, in creation order (``imagegate db copy`` reads them)."""
        names = await self.fetchall(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            " AND name != '_migrations' ORDER BY rowid"
        )
        tables = {}
        for (name,) in names:
            columns = [row[1] for row in await self.fetchall(f'PRAGMA table_info("{name}")')]
            refs = {row[2] for row in await self.fetchall(f'PRAGMA foreign_key_list("{name}")')}
            tables[name] = (columns, refs - {name})
        return tables

    async def read_rows(
        self, table: str, columns: list[str], *, batch: int = 5000
    ) -> AsyncIterator[list[tuple[Any, ...]]]:
        """All rows of ``table`` (``columns`` in order), ``batch`` at a time, in rowid order."""
        listed = ", ".join(f'"{c}"' for c in columns)
        last = None
        while True:
            rows = await self.fetchall(
                f'SELECT rowid, {listed} FROM "{table}"'
                + (" WHERE rowid > ?" if last is not None else "")
                + " ORDER BY rowid LIMIT ?",
                (last, batch) if last is not None else (batch,),
            )
            if not rows:
                return
            last = rows[-1][0]
            yield [tuple(row)[1:] for row in rows]


def is_sqlite_file(path: Path) -> bool:
    """True when ``path`` is an existing SQLite database file."""
    try:
        with open(path, "rb") as file:
            return file.read(16) == b"SQLite format 3\x00"
    except OSError:
        return False


_QUEUED, _RUNNING, _CANCELLED = "queued", "running", "cancelled"
_MAX_GROUP = 256  # bounds how long one group holds SQLite's write lock


class _Op:
    __slots__ = ("fn", "args", "future", "loop", "state")

    def __init__(self, fn: Body[Any], args: tuple, loop: asyncio.AbstractEventLoop):
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
        self.waiting = 0  # ops still _QUEUED (changed under _state_lock)
        self._thread = threading.Thread(target=self._serve, name="imagegate-db-writer", daemon=True)
        self._thread.start()

    async def submit(self, fn: Body[Any], args: tuple) -> Any:
        if self._closed:
            raise sqlite3.ProgrammingError("the database is closed")
        op = _Op(fn, args, asyncio.get_running_loop())
        with self._state_lock:
            self.waiting += 1
        self._queue.put(op)
        try:
            return await op.future
        except asyncio.CancelledError:
            # Not started yet: it never will be. Already running: it completes regardless,
            # as a transaction whose COMMIT was under way always did.
            with self._state_lock:
                if op.state == _QUEUED:
                    op.state = _CANCELLED
                    self.waiting -= 1
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
            self.waiting -= len(live)
        if not live:
            return
        conn = self._conn
        tx = SqliteTx(conn)
        outcomes: list[tuple[bool, Any]] = []
        try:
            conn.execute("BEGIN IMMEDIATE")
            for op in live:
                conn.execute("SAVEPOINT op")
                try:
                    outcomes.append((True, run_body(op.fn(tx, *op.args))))
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


async def apply_migrations(tx: Tx, migrations: list[tuple[str, list[str]]], now: str) -> list[str]:
    """A transaction body: apply the ``migrations`` that ``_migrations`` does not record yet,
    in order, each recorded with the time ``now`` (the engine's SQL for the UTC time as
    YYYY-MM-DD HH:MM:SS); returns their names."""
    await tx.execute(
        "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
    )
    done = {row[0] for row in await tx.fetchall("SELECT name FROM _migrations")}
    applied = []
    for name, statements in migrations:
        if name in done:
            continue
        for statement in statements:
            await tx.execute(statement)
        await tx.execute(f"INSERT INTO _migrations VALUES (?, {now})", (name,))
        applied.append(name)
    return applied


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
