"""``imagegate db copy SQLITE_PATH``: move an existing SQLite database to PostgreSQL.

Everything is copied (accounts, ledger, holds, jobs, images, scope settings, tokens, rate
buckets: every table of the schema, ids included) into the configured PostgreSQL database,
which must be empty, in one transaction. Before it commits, the copy is compared with the
source: the rows of every table, every account's balance, every user's ledger sums and the
holds by state must all match, or nothing is written. A user who outgrows SQLite keeps their
history. The SQLite file is brought up to this version's schema first (as start-up would).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .db import Database, SqliteDatabase, Tx, is_sqlite_file
from .errors import ConfigError, ImageGateError, InvalidRequestError

# Portable queries whose answers must be the same in the source and the copy.
_CHECKS = {
    "balances": "SELECT user_id, period, allowance_used, granted, held, allowance_override,"
    " debt FROM account",
    "ledger sums": "SELECT user_id, count(*), CAST(SUM(d_allowance_used) AS BIGINT),"
    " CAST(SUM(d_granted) AS BIGINT), CAST(SUM(d_held) AS BIGINT),"
    " CAST(SUM(d_debt) AS BIGINT), max(entry_id) FROM ledger GROUP BY user_id",
    "holds": "SELECT state, count(*), CAST(SUM(from_allowance + from_granted) AS BIGINT),"
    " CAST(SUM(COALESCE(settled_amount, 0)) AS BIGINT) FROM hold GROUP BY state",
    "jobs": "SELECT status, count(*), CAST(SUM(credits_charged) AS BIGINT) FROM job"
    " GROUP BY status",
}


@dataclass
class CopyReport:
    """What was copied: rows per table, and how many accounts were checked."""

    rows: dict[str, int] = field(default_factory=dict)
    accounts: int = 0
    migrated_source: list[str] = field(default_factory=list)


async def copy_sqlite(source_path: Path, target: Database) -> CopyReport:
    """Copy the SQLite database at ``source_path`` into ``target`` (PostgreSQL, migrated).

    Raises:
        InvalidRequestError: the source is not a SQLite database, the target is not
            PostgreSQL or not empty; nothing was written.
        ImageGateError: the copy did not match its source (rolled back: nothing was written).
    """
    from .pg import PostgresDatabase

    if not isinstance(target, PostgresDatabase):
        raise InvalidRequestError(
            "db copy fills a PostgreSQL database: set [database] url_env to the name of a"
            " variable holding its postgresql:// URL"
        )
    if not is_sqlite_file(source_path):
        raise InvalidRequestError(f"{source_path} is not a SQLite database file")
    source = await SqliteDatabase.open(source_path, migrate=False)
    try:
        report = CopyReport(migrated_source=await source.upgrade())
        tables = await source.tables()
        await _check_target(tables, target)
        order = _dependency_order(tables)
        expected = {name: await _answers(source.fetchall, name) for name in _CHECKS}
        counts = {t: (await source.fetchone(f'SELECT count(*) FROM "{t}"'))[0] for t in order}

        async def check(tx: Tx) -> int:
            for table, count in counts.items():
                copied = (await tx.fetchone(f'SELECT count(*) FROM "{table}"'))[0]
                if copied != count:
                    raise _mismatch(f"{table}: {copied} rows copied of {count}")
            for name, answer in expected.items():
                if await _answers(tx.fetchall, name) != answer:
                    raise _mismatch(f"the {name} differ from the SQLite file's")
            return len(expected["balances"])

        loads = [(t, tables[t][0], source.read_rows(t, tables[t][0])) for t in order]
        report.accounts = await target.load(loads, check)
        report.rows = counts
        return report
    finally:
        await source.close()


async def _check_target(tables: dict[str, tuple[list[str], set[str]]], target: Any) -> None:
    """Refuse a target that lacks a table or column, or holds any row."""
    columns = await target.columns()
    for table, (names, _) in tables.items():
        missing = set(names) - set(columns.get(table, []))
        if missing:
            raise ConfigError(
                f"the PostgreSQL database has no {table}({', '.join(sorted(missing))}):"
                " is it this version's schema? see `imagegate db status`"
            )
    filled = []
    for table in columns:
        count = (await target.fetchone(f'SELECT count(*) FROM "{table}"'))[0]
        if count:
            filled.append(f"{table} ({count})")
    if filled:
        raise InvalidRequestError(
            "db copy only fills an empty database, and this one has rows in " + ", ".join(filled)
        )


def _dependency_order(tables: dict[str, tuple[list[str], set[str]]]) -> list[str]:
    """Table names, each after the tables its foreign keys reference."""
    order: list[str] = []
    pending = dict(tables)
    while pending:
        ready = [t for t, (_, refs) in pending.items() if refs <= set(order)]
        if not ready:  # a cycle: leave the rest in creation order
            ready = list(pending)
        order += ready
        for table in ready:
            del pending[table]
    return order


async def _answers(fetchall: Any, name: str) -> set[tuple[Any, ...]]:
    return {tuple(row) for row in await fetchall(_CHECKS[name])}


def _mismatch(what: str) -> ImageGateError:
    return ImageGateError(f"the copy did not match its source ({what}); nothing was written")
