"""Small JSON settings documents keyed by a scope string (front-end agnostic).

A front end picks its own scope names, e.g. ``discord:guild:1234`` for one Discord server's
settings; the core only stores and returns the documents. One row per scope, replaced whole.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from .db import Database, Tx
from .errors import InvalidRequestError

SCOPE_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,31}(:[A-Za-z0-9_.-]{1,64}){1,4}$")
MAX_DOCUMENT_BYTES = 32 * 1024


def check_scope(scope: str) -> str:
    """The scope unchanged, or an error saying what a scope looks like.

    Raises:
        InvalidRequestError: not of the form ``name:part[:part...]``.
    """
    if not SCOPE_PATTERN.fullmatch(scope):
        raise InvalidRequestError(
            f"invalid settings scope {scope!r}:"
            " use lowercase name:part[:part], e.g. discord:guild:1"
        )
    return scope


class ScopeSettingsStore:
    """Reads and replaces settings documents in the ``scope_setting`` table."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def get(self, scope: str) -> dict[str, Any]:
        """The document stored for ``scope``; ``{}`` when there is none."""
        row = await self.db.fetchone(
            "SELECT value FROM scope_setting WHERE scope = ?", (check_scope(scope),)
        )
        return {} if row is None else json.loads(row["value"])

    async def all(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every stored document whose scope starts with ``prefix``."""
        escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        rows = await self.db.fetchall(
            "SELECT scope, value FROM scope_setting WHERE scope LIKE ? ESCAPE '\\' ORDER BY scope",
            (escaped + "%",),
        )
        return {row["scope"]: json.loads(row["value"]) for row in rows}

    async def put(self, scope: str, values: dict[str, Any], *, by: str) -> dict[str, Any]:
        """Replace the document of ``scope`` (an empty dict deletes it); returns what is stored.

        Raises:
            InvalidRequestError: a bad scope, or values that are not a small JSON object.
        """
        check_scope(scope)
        if not isinstance(values, dict):
            raise InvalidRequestError("settings must be a JSON object")
        try:
            text = json.dumps(values, sort_keys=True, allow_nan=False)
        except (TypeError, ValueError):
            raise InvalidRequestError("settings must hold only JSON values") from None
        if len(text.encode()) > MAX_DOCUMENT_BYTES:
            raise InvalidRequestError(
                f"settings for {scope} are too large (limit {MAX_DOCUMENT_BYTES // 1024} KB)"
            )
        await self.db.transact(_put, scope, text if values else None, by, int(time.time() * 1000))
        return json.loads(text)


async def _put(tx: Tx, scope: str, text: str | None, by: str, now_ms: int) -> None:
    if text is None:
        await tx.execute("DELETE FROM scope_setting WHERE scope = ?", (scope,))
        return
    await tx.execute(
        "INSERT INTO scope_setting (scope, value, updated_by, updated_at) VALUES (?, ?, ?, ?)"
        " ON CONFLICT (scope) DO UPDATE SET value = excluded.value,"
        " updated_by = excluded.updated_by, updated_at = excluded.updated_at",
        (scope, text, by, now_ms),
    )
