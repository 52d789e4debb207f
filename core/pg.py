"""The PostgreSQL backend: one ledger and one job store shared by processes on many hosts.

Chosen when ``[database] url_env`` names an environment variable holding a ``postgresql://``
URL (``core.db.open_database``). The transaction bodies are the ones SQLite runs (``core.db``
explains them); this module holds everything PostgreSQL-specific: the driver, the pool, the
schema (``MIGRATIONS``, the same steps by the same names as SQLite's) and the retry rule.

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

from .db import Body, Database, Params, T
from .errors import ConfigError

MIGRATIONS: list[tuple[str, str]] = []
#: A table to fill (``PostgresDatabase.load``): name, columns, batches of rows.
Load = tuple[str, list[str], AsyncIterable[list[tuple[Any, ...]]]]


def migration(name: str, sql: str) -> None:
    """Register a schema step (same name as its SQLite twin in ``core.db``)."""
    MIGRATIONS.append((name, sql))


# Types: every count, credit and millisecond timestamp is BIGINT (SUM of BIGINT is NUMERIC,
# so sums the code reads are cast back to BIGINT); JSON documents are TEXT, as in SQLite.

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
      credits_charged BIGINT NOT NULL DEFAULT 0,
      warnings    TEXT NOT NULL DEFAULT '[]',
      error       TEXT,
      owner       TEXT,
      created_at  BIGINT NOT NULL,
      finished_at BIGINT
    );
    CREATE INDEX job_user ON job(user_id, created_at);
    CREATE INDEX job_running ON job(owner) WHERE status = 'running';
    CREATE TABLE image (
      image_id    TEXT PRIMARY KEY,
      job_id      TEXT REFERENCES job(job_id),
      idx         BIGINT NOT NULL,
      user_id     TEXT NOT NULL,
      sha256      TEXT NOT NULL,
      mime        TEXT NOT NULL,
      width       BIGINT NOT NULL,
      height      BIGINT NOT NULL,
      seed        BIGINT,
      model       TEXT NOT NULL,
      provider_image_id TEXT,
      meta        TEXT NOT NULL DEFAULT '{}',
      created_at  BIGINT NOT NULL
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
      allowance_used  BIGINT NOT NULL DEFAULT 0 CHECK (allowance_used >= 0),
      granted         BIGINT NOT NULL DEFAULT 0 CHECK (granted >= 0),
      held            BIGINT NOT NULL DEFAULT 0 CHECK (held >= 0),
      allowance_override BIGINT CHECK (allowance_override >= 0),
      updated_at      BIGINT NOT NULL
    );
    CREATE TABLE hold (
      hold_id        TEXT PRIMARY KEY,
      user_id        TEXT NOT NULL REFERENCES account(user_id),
      idem_key       TEXT NOT NULL UNIQUE,
      request_hash   TEXT NOT NULL,
      period         TEXT NOT NULL,
      from_allowance BIGINT NOT NULL,
      from_granted   BIGINT NOT NULL,
      state          TEXT NOT NULL CHECK (state IN ('held','settled','released','expired')),
      settled_amount BIGINT,
      job_id         TEXT,
      owner          TEXT,
      created_at     BIGINT NOT NULL,
      expires_at     BIGINT NOT NULL
    );
    CREATE INDEX hold_open ON hold(user_id) WHERE state = 'held';
    CREATE INDEX hold_expiry ON hold(expires_at) WHERE state = 'held';
    CREATE TABLE ledger (
      entry_id        BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
      user_id         TEXT NOT NULL,
      hold_id         TEXT,
      kind            TEXT NOT NULL CONSTRAINT ledger_kind CHECK (kind IN
                        ('grant','reset','hold','capture','release','expire','adjust')),
      d_allowance_used BIGINT NOT NULL DEFAULT 0,
      d_granted       BIGINT NOT NULL DEFAULT 0,
      d_held          BIGINT NOT NULL DEFAULT 0,
      reason          TEXT,
      created_at      BIGINT NOT NULL,
      UNIQUE (hold_id, kind)
    );
    CREATE INDEX ledger_user ON ledger(user_id, entry_id);
    CREATE TABLE rate_bucket (
      user_id TEXT NOT NULL,
      name    TEXT NOT NULL,
      tat_ms  BIGINT NOT NULL,
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
      updated_at  BIGINT NOT NULL
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
      created_at    BIGINT NOT NULL,
      last_used_at  BIGINT,
      revoked_at    BIGINT
    );
    CREATE INDEX api_token_kind ON api_token(kind, user_id);
    """,
)

migration(
    "m005_ledger_audit",
    """
    ALTER TABLE ledger DROP CONSTRAINT ledger_kind;
    ALTER TABLE ledger ADD CONSTRAINT ledger_kind CHECK (kind IN
      ('grant','reset','hold','capture','release','expire','adjust','allowance'));
    ALTER TABLE ledger ADD COLUMN actor TEXT;
    """,
)

migration(
    "m006_image_bytes_lost",
    """
    ALTER TABLE image ADD COLUMN bytes BIGINT;
    ALTER TABLE image ADD COLUMN lost TEXT;
    CREATE INDEX image_created ON image(created_at);
    """,
)


migration(
    "m007_reports",
    """
    CREATE INDEX job_created ON job(created_at);
    CREATE INDEX ledger_created ON ledger(created_at);
    CREATE TABLE provider_balance (
      provider  TEXT NOT NULL,
      taken_at  BIGINT NOT NULL,
      amount    DOUBLE PRECISION NOT NULL,
      unit      TEXT NOT NULL,
      PRIMARY KEY (provider, taken_at)
    );
    CREATE TABLE alert_sent (
      alert     TEXT NOT NULL,
      period    TEXT NOT NULL,
      sent_at   BIGINT NOT NULL,
      PRIMARY KEY (alert, period)
    );
    """,
)


migration(
    "m008_image_owner_hash",  # recognise an upload as one of the user's results
    """
    CREATE INDEX image_owner_hash ON image(user_id, sha256);
    """,
)


migration(
    "m009_instance_leases",
    """
    CREATE TABLE instance (
      instance_id TEXT PRIMARY KEY,
      host        TEXT NOT NULL,
      pid         BIGINT NOT NULL,
      started_at  BIGINT NOT NULL,
      renewed_at  BIGINT NOT NULL,
      expires_at  BIGINT NOT NULL
    );
    CREATE INDEX hold_owner ON hold(owner) WHERE state = 'held';
    """,
)


migration(
    "m010_job_cancel",  # a cancel request that the process running the job acts on
    """
    ALTER TABLE job ADD COLUMN cancel_requested_at BIGINT;
    CREATE INDEX image_user ON image(user_id, created_at);
    """,
)


migration(
    "m011_late_charges",
    """
    ALTER TABLE account ADD COLUMN debt BIGINT NOT NULL DEFAULT 0 CHECK (debt >= 0);
    ALTER TABLE ledger DROP CONSTRAINT ledger_kind;
    ALTER TABLE ledger ADD CONSTRAINT ledger_kind CHECK (kind IN
      ('grant','reset','hold','capture','release','expire','adjust','allowance','late_charge'));
    ALTER TABLE ledger ADD COLUMN d_debt BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX ledger_late ON ledger(user_id, created_at) WHERE kind = 'late_charge';
    """,
)


migration(
    "m012_job_marks",  # /show: where a result was posted publicly; results deleted by a user
    """
    CREATE TABLE job_share (
      job_id      TEXT NOT NULL,
      scope       TEXT NOT NULL,
      created_at  BIGINT NOT NULL,
      PRIMARY KEY (job_id, scope)
    );
    CREATE TABLE job_deleted (
      job_id      TEXT PRIMARY KEY,
      deleted_by  TEXT NOT NULL,
      deleted_at  BIGINT NOT NULL
    );
    """,
)


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


class PostgresDatabase(Database):
    """A pool of asyncpg connections to one PostgreSQL database."""

    dialect = "postgresql"
    IntegrityError = asyncpg.IntegrityConstraintViolationError
    migrations = MIGRATIONS

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

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

    async def _transact(self, body: Body[T], args: tuple, started: list[bool]) -> T:
        async with self._pool.acquire() as conn:
            started.append(True)
            for attempt in range(1, _ATTEMPTS + 1):
                try:
                    async with conn.transaction(isolation="read_committed"):
                        return await body(PostgresTx(conn), *args)
                except _RETRY:
                    if attempt == _ATTEMPTS:
                        raise
        raise AssertionError("unreachable")

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
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS _migrations (name TEXT PRIMARY KEY, applied_at TEXT)"
            )
            done = {row[0] for row in await conn.fetch("SELECT name FROM _migrations")}
            applied = []
            for name, sql in MIGRATIONS:
                if name in done:
                    continue
                await conn.execute(sql)  # no arguments: several statements in one go
                await conn.execute(
                    "INSERT INTO _migrations VALUES"
                    " ($1, to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS'))",
                    name,
                )
                applied.append(name)
            return applied

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


def redact(text: str, url: str) -> str:
    """``text`` without ``url`` or the password in it."""
    text = text.replace(url, "***")
    try:
        password = urlsplit(url).password
    except ValueError:
        password = None
    return text.replace(password, "***") if password else text


def _collect(task: asyncio.Future[Any]) -> None:
    """Retrieve the outcome of a transaction whose caller left (so it is not logged as lost)."""
    if not task.cancelled():
        task.exception()
