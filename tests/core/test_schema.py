"""The schema written once for both backends (core.schema) makes, step by step, exactly the
schema that each backend's own list of migrations made before (snapshots/schema.json, taken
from that code: a digest of the schema after every step, as existing databases went through
them, and the whole schema after the last). A later step is not in the snapshot and not
compared."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from core import parse_settings, schema
from core.db import Database, open_database

SNAPSHOT = json.loads((Path(__file__).parent / "snapshots" / "schema.json").read_text())

# SQLite keeps each object's CREATE text; PostgreSQL is read back from its catalogs, with
# the test's own schema name taken out of the definitions.
SQLITE_SCHEMA = ("SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY rowid",)
PG_SCHEMA = (
    "SELECT 'column', table_name::text, column_name::text, concat_ws(' ', ordinal_position,"
    " data_type, column_default, is_nullable, is_identity, identity_generation)"
    " FROM information_schema.columns WHERE table_schema = current_schema()",
    "SELECT 'index', tablename::text, indexname::text,"
    " replace(indexdef, current_schema() || '.', '')"
    " FROM pg_indexes WHERE schemaname = current_schema()",
    "SELECT 'constraint', conrelid::regclass::text, conname::text, pg_get_constraintdef(oid)"
    " FROM pg_constraint WHERE connamespace = current_schema()::regnamespace",
)


async def dump(db: Database) -> list[list[Any]]:
    """The schema as rows: SQLite's in creation order, PostgreSQL's sorted."""
    if db.dialect == "sqlite":
        return [list(row) for row in await db.fetchall(SQLITE_SCHEMA[0])]
    rows = [list(row) for query in PG_SCHEMA for row in await db.fetchall(query)]
    return sorted(rows)


def digest(rows: list[list[Any]]) -> str:
    return hashlib.sha256(json.dumps(rows).encode()).hexdigest()


async def test_every_step_makes_the_schema_it_made_before(backend, monkeypatch):
    settings = parse_settings({"database": backend})
    db = await open_database(settings.database, migrate=False)
    every, expected = type(db).migrations, SNAPSHOT[db.dialect]
    try:
        for count, (name, _) in enumerate(every, start=1):
            monkeypatch.setattr(type(db), "migrations", every[:count])
            assert await db.upgrade() == [name]
            rows = await dump(db)
            if name == list(expected["steps"])[-1]:
                assert rows == expected["final"]
            assert digest(rows) == expected["steps"].get(name, digest(rows)), name
    finally:
        await db.close()
    assert list(expected["steps"]) == [name for name, _ in every][: len(expected["steps"])]


@pytest.mark.parametrize("dialect", schema.DIALECTS)
def test_every_placeholder_is_filled(dialect):
    for name, statements in schema.migrations(dialect):
        assert statements, name
        for statement in statements:
            assert "{" not in statement.replace("'{}'", ""), (name, statement)
