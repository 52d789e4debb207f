"""The PostgreSQL backend: one ledger and one job store shared by processes on many hosts.

Chosen when ``[database] url_env`` names an environment variable holding a ``postgresql://``
URL (``core.db.open_database``). The transaction bodies are the ones SQLite runs (``core.db``
explains them), and so is the schema (``core.schema``); this module holds everything
PostgreSQL-specific: the driver, the pool, applying the schema and the retry rule.

Driver: asyncpg. It is asyncio-native with its own connection pool (no extra package), speaks
the binary protocol, and prepares and caches every statement per connection, so the short,
repeated ledger statements skip parsing and planning after their first use; in ``make bench``
(ledger-pg) that is what keeps our overhead over the bare driver small. psycopg 3 would do
too; its strengths (libpq compatibility, pipeline mode) buy nothing for transactions whose
next statement depends on the last one's answer. Behind PgBouncer in transaction mode, set
its ``max_prepared_statements`` (1.21+), as asyncpg's cache needs.

Concurrency (every process, every host): each transaction runs at READ COMMITTED. A reserve
first upserts the user's ``account`` row, which locks it until commit, so every reserve,
grant and allowance change of one user runs one after another and each sees the others'
committed holds: no overspend, and no rate-limit or in-flight bypass, however many processes
reserve at once. Settling and releasing are conditional updates (``WHERE state = 'held'``),
so each happens at most once. A transaction that lost a race it cannot see under READ
COMMITTED (a unique key another one committed meanwhile, a deadlock, a serialization
failure) is run again from the start, up to ``_ATTEMPTS`` times: the next run sees the
winner's row, as SQLite's one-writer-at-a-time would have.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable, Sequence
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from . import schema
from .db import Body, Database, Params, T, apply_migrations
from .errors import ConfigError

#: A table to fill (``PostgresDatabase.load``): name, columns, batches of rows.
Load = tuple[str, list[str], AsyncIterable[list[tuple[Any, ...]]]]

_ATTEMPTS = 3
# A race lost to a concurrent transaction: run the body again (see the module docstring).
# Also a statement prepared before another process migrated the schema (a rolling upgrade of
# replicas): asyncpg prepares it afresh on the next run.
_RETRY = (
    asyncpg.UniqueViolationError,
    asyncpg.DeadlockDetectedError,
    asyncpg.SerializationError,
    asyncpg.InvalidCachedStatementError,
)
_MIGRATION_LOCK = 0x1A6E_6A7E  # pg_advisory_xact_lock key: one process migrates at a time
_UTC_NOW = "to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS')"


class PostgresTx:
    """``Tx`` on one pooled connection inside an open transaction."""

    __slots__ = ("conn",)
    dialect = "postgresql"

    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def fetchone(self, sql: str, params: Params = ()) -> Any:
        return await self.conn.fetchrow(pg_sql(sql), *params)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return await self.conn.fetch(pg_sql(sql), *params)

    async def execute(self, sql: str, params: Params = ()) -> int:
        status = await self.conn.execute(pg_sql(sql), *params)
        count = status.rpartition(" ")[2]  # "UPDATE 3", "INSERT 0 1", "CREATE TABLE"
        return int(count) if count.isdigit() else 0

    async def executemany(self, sql: str, rows: Any) -> None:
        await self.conn.executemany(pg_sql(sql), rows)

    async def execute_all(self, statements: Sequence[tuple[str, Params]]) -> None:
        params = [value for _, values in statements for value in values]
        await self.conn.execute(combined_sql(tuple(sql for sql, _ in statements)), *params)


class PostgresDatabase(Database):
    """A pool of asyncpg connections to one PostgreSQL database."""

    dialect = "postgresql"
    IntegrityError = asyncpg.IntegrityConstraintViolationError
    migrations = schema.migrations("postgresql")

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._waiting = 0  # transactions waiting for a connection

    @classmethod
    async def open(
        cls, url: str, *, pool_size: int = 10, source: str = "the URL"
    ) -> PostgresDatabase:
        """Connect a pool of up to ``pool_size`` connections (``source`` names where the URL
        came from, for messages: the URL itself may hold a password and is never shown).

        Raises:
            ConfigError: the server cannot be reached or refuses the login.
        """
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min(2, pool_size),
                max_size=pool_size,
                server_settings={"application_name": "imagegate"},
                reset=_keep_session,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, ValueError) as exc:
            reason = redact(f"{type(exc).__name__}: {exc}", url)
            message = f"cannot open the PostgreSQL database in {source}: {reason}"
            raise ConfigError(message) from None
        return cls(pool)

    async def close(self) -> None:
        await self._pool.close()

    async def transact(self, body: Body[T], *args: Any) -> T:
        started: list[bool] = []
        task = asyncio.ensure_future(self._transact(body, args, started))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            if not started:  # still waiting for a connection: it never runs
                task.cancel()
            task.add_done_callback(_collect)
            raise

    def waiting(self) -> int:
        return self._waiting

    async def _transact(self, body: Body[T], args: tuple, started: list[bool]) -> T:
        self._waiting += 1
        try:
            conn = await self._pool.acquire()
        finally:
            self._waiting -= 1
        started.append(True)
        try:
            return await _attempts(conn, body, args)
        finally:
            await self._pool.release(conn)

    async def fetchall(self, sql: str, params: Params = ()) -> list[Any]:
        return await self._pool.fetch(pg_sql(sql), *params)

    async def _applied(self) -> dict[str, str]:
        if await self._pool.fetchval("SELECT to_regclass('_migrations')") is None:
            return {}
        rows = await self._pool.fetch("SELECT name, applied_at FROM _migrations")
        return {row[0]: row[1] for row in rows}

    async def upgrade(self) -> list[str]:
        async with self._pool.acquire() as conn, conn.transaction():
            # Replicas starting together: the first migrates, the others then find it done.
            await conn.execute("SELECT pg_advisory_xact_lock($1)", _MIGRATION_LOCK)
            return await apply_migrations(PostgresTx(conn), self.migrations, _UTC_NOW)

    async def columns(self) -> dict[str, list[str]]:
        """Every table of the schema (not ``_migrations``) and its columns."""
        rows = await self._pool.fetch(
            "SELECT table_name, column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name != '_migrations'"
            " ORDER BY table_name, ordinal_position"
        )
        tables: dict[str, list[str]] = {}
        for table, column in rows:
            tables.setdefault(table, []).append(column)
        return tables

    async def load(self, tables: Sequence[Load], check: Body[T]) -> T:
        """Fill tables with COPY, all in one transaction: ``tables`` are (name, columns,
        batches of rows); then each identity counter is moved past the ids copied, and
        ``check(tx)`` runs before the commit (raising undoes everything)."""
        async with self._pool.acquire() as conn, conn.transaction(isolation="read_committed"):
            for table, columns, batches in tables:
                async for rows in batches:
                    await conn.copy_records_to_table(table, records=rows, columns=columns)
            identities = await conn.fetch(
                "SELECT table_name, column_name FROM information_schema.columns"
                " WHERE table_schema = current_schema() AND is_identity = 'YES'"
            )
            for table, column in identities:
                await conn.execute(
                    f'SELECT setval(pg_get_serial_sequence($1, $2), max("{column}")) FROM'
                    f' "{table}" HAVING max("{column}") IS NOT NULL',
                    f'"{table}"',
                    column,
                )
            return await check(PostgresTx(conn))


async def _attempts(conn: asyncpg.Connection, body: Body[T], args: tuple) -> T:
    """Run ``body`` in a transaction on ``conn``, again after a race it lost (``_RETRY``)."""
    for attempt in range(1, _ATTEMPTS + 1):
        try:
            async with conn.transaction(isolation="read_committed"):
                return await body(PostgresTx(conn), *args)
        except _RETRY:
            if attempt == _ATTEMPTS:
                raise
    raise AssertionError("unreachable")


@functools.lru_cache(maxsize=2048)
def pg_sql(sql: str) -> str:
    """The statement with ``?`` placeholders numbered ``$1``, ``$2``... (quoted text kept)."""
    out: list[str] = []
    number, quote = 0, ""
    for char in sql:
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "?":
            number += 1
            out.append(f"${number}")
            continue
        out.append(char)
    return "".join(out)


@functools.lru_cache(maxsize=256)
def combined_sql(statements: tuple[str, ...]) -> str:
    """Writes as one statement (``$n`` placeholders numbered across them): all but the last
    become data-modifying ``WITH`` items, which PostgreSQL runs to completion, each once, on
    the statement's one snapshot."""
    *first, last = statements
    items = ", ".join(f"_w{i} AS ({sql} RETURNING 1)" for i, sql in enumerate(first))
    return pg_sql(f"WITH {items} {last}" if items else last)


def redact(text: str, url: str) -> str:
    """``text`` without ``url`` or the password in it."""
    text = text.replace(url, "***")
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Reset nothing when a connection goes back to the pool (asyncpg has rolled back any
    open transaction by then). Nothing here changes session state (no SET, LISTEN, session
    advisory lock or cursor outside a transaction), so the default reset (RESET ALL,
    UNLISTEN *, CLOSE ALL, pg_advisory_unlock_all()) would be one more trip to the server per
    transaction for nothing."""


def _collect(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a transaction whose caller left (so it is not logged as lost)."""
    if not task.cancelled():
        task.exception()
