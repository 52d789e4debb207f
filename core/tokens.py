"""Hashed bearer tokens of any kind (``admin`` for the dashboard, ``mcp`` for MCP clients).

A token is shown in clear exactly once, when it is minted; the database keeps only its SHA-256
digest. A token reads ``ig_<kind>_<prefix>_<secret>``: the kind and prefix let a person (and a
secret scanner) tell what it is, the prefix finds the row, and the digest is compared in
constant time, so neither a wrong secret nor a wrong prefix tells an attacker how close it came.
``imagegate admin token`` and ``imagegate admin tokens`` are the operators' side of this.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from .db import Database, Tx, from_ms
from .errors import InvalidRequestError, NotFoundError

KIND_PATTERN = re.compile(r"[a-z]{1,16}")
PREFIX_CHARS = 8
MAX_TOKEN_CHARS = 256
# Seeing a token refreshes its last use at most this often: a busy client is not a write per call.
LAST_USED_RESOLUTION_MS = 60_000
_TOKEN = re.compile(r"ig_([a-z]{1,16})_([A-Za-z0-9]{8})_([A-Za-z0-9_-]{20,200})")  # 8: PREFIX_CHARS
_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class TokenInfo:
    """What is known about a token, never the token itself."""

    kind: str
    user: str
    prefix: str
    label: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @property
    def shown(self) -> str:
        """How lists show the token: enough to recognise it, nothing to use it."""
        return f"ig_{self.kind}_{self.prefix}_…"

    @property
    def active(self) -> bool:
        return self.revoked_at is None


def digest(token: str) -> str:
    """The hex SHA-256 the store keeps for ``token``."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


class TokenStore:
    """Mints, verifies, lists and revokes tokens in the ``api_token`` table.

    ``clock`` returns epoch seconds (injectable for tests).
    """

    def __init__(self, db: Database, clock: Callable[[], float] = time.time) -> None:
        self.db = db
        self.clock = clock

    async def mint(self, kind: str, user: str, *, label: str = "") -> tuple[str, TokenInfo]:
        """A new token for ``user``: (the plaintext, shown once and never stored; its info).

        Raises:
            InvalidRequestError: a bad kind, user or label.
        """
        _check_kind(kind)
        if not re.fullmatch(r"[^\s]{1,160}", user):
            raise InvalidRequestError("the user must be 1-160 characters without spaces")
        if len(label) > 200:
            raise InvalidRequestError("the label must be at most 200 characters")
        prefix = "".join(secrets.choice(_ALNUM) for _ in range(PREFIX_CHARS))
        token = f"ig_{kind}_{prefix}_{secrets.token_urlsafe(32)}"
        now_ms = self._now_ms()
        await self.db.transact(_insert, prefix, kind, user, digest(token), label, now_ms)
        created = from_ms(now_ms)
        return token, TokenInfo(kind, user, prefix, label, created, None, None)

    async def verify(self, kind: str, token: str) -> TokenInfo | None:
        """The info of the active token of ``kind`` that ``token`` is, or None (never raises
        for a bad token: whatever was presented, the answer is only yes or no)."""
        match = _TOKEN.fullmatch(token or "") if len(token or "") <= MAX_TOKEN_CHARS else None
        presented = digest(token or "")
        row = None
        if match is not None and match[1] == kind:
            row = await self.db.fetchone(
                _SELECT + " WHERE prefix = ? AND kind = ?", (match[2], kind)
            )
        expected = row["sha256"] if row is not None else "0" * 64
        if not hmac.compare_digest(presented, expected) or row is None or row["revoked_at"]:
            return None
        now_ms = self._now_ms()
        if (row["last_used_at"] or 0) + LAST_USED_RESOLUTION_MS <= now_ms:
            await self.db.transact(_touch, row["prefix"], now_ms)
        return _info(row, last_used_ms=now_ms)

    async def get(self, kind: str, prefix: str) -> TokenInfo | None:
        """The token of ``kind`` with this exact prefix (active or revoked), or None."""
        row = await self.db.fetchone(_SELECT + " WHERE prefix = ? AND kind = ?", (prefix, kind))
        return None if row is None else _info(row)

    async def list(
        self, kind: str | None = None, *, include_revoked: bool = False, user: str | None = None
    ) -> list[TokenInfo]:
        """Tokens (of ``kind``, or all; of ``user``, or everyone's), oldest first; revoked ones
        only when asked for."""
        where, params = [], []
        if kind is not None:
            where.append("kind = ?")
            params.append(_check_kind(kind))
        if user is not None:
            where.append("user_id = ?")
            params.append(user)
        if not include_revoked:
            where.append("revoked_at IS NULL")
        sql = _SELECT + (" WHERE " + " AND ".join(where) if where else "")
        rows = await self.db.fetchall(sql + " ORDER BY created_at, prefix", tuple(params))
        return [_info(row) for row in rows]

    async def revoke(self, kind: str, prefix: str) -> TokenInfo:
        """Revoke the token of ``kind`` with this prefix (as listed: ``ig_admin_AbCd1234_…`` or
        just ``AbCd1234``); revoking twice is harmless. Returns the token's info.

        Raises:
            NotFoundError: no token of that kind has that prefix.
        """
        bare = bare_prefix(kind, prefix)
        row = await self.db.transact(_revoke, kind, bare, self._now_ms())
        if row is None:
            raise NotFoundError(f"no {kind} token with prefix {bare!r} (see the token list)")
        return _info(row)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


_SELECT = (
    "SELECT prefix, kind, user_id, sha256, label, created_at, last_used_at, revoked_at"
    " FROM api_token"
)


def bare_prefix(kind: str, prefix: str) -> str:
    """The prefix alone, from ``ig_<kind>_AbCd1234_…`` as lists show it, or from itself.

    Raises:
        InvalidRequestError: a bad kind."""
    _check_kind(kind)
    return prefix.strip().removeprefix(f"ig_{kind}_").rstrip("_…").split("_")[0]


def _check_kind(kind: str) -> str:
    if not KIND_PATTERN.fullmatch(kind):
        raise InvalidRequestError("a token kind is 1-16 lowercase letters, e.g. admin or mcp")
    return kind


def _info(row: Any, *, last_used_ms: int | None = None) -> TokenInfo:
    return TokenInfo(
        kind=row["kind"],
        user=row["user_id"],
        prefix=row["prefix"],
        label=row["label"],
        created_at=from_ms(row["created_at"]),
        last_used_at=from_ms(last_used_ms or row["last_used_at"]),
        revoked_at=from_ms(row["revoked_at"]),
    )


async def _insert(
    tx: Tx, prefix: str, kind: str, user: str, sha: str, label: str, now: int
) -> None:
    await tx.execute(
        "INSERT INTO api_token (prefix, kind, user_id, sha256, label, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?)",
        (prefix, kind, user, sha, label, now),
    )


async def _touch(tx: Tx, prefix: str, now_ms: int) -> None:
    await tx.execute("UPDATE api_token SET last_used_at = ? WHERE prefix = ?", (now_ms, prefix))


async def _revoke(tx: Tx, kind: str, prefix: str, now_ms: int) -> Any:
    await tx.execute(
        "UPDATE api_token SET revoked_at = ? WHERE prefix = ? AND kind = ? AND revoked_at IS NULL",
        (now_ms, prefix, kind),
    )
    return await tx.fetchone(_SELECT + " WHERE prefix = ? AND kind = ?", (prefix, kind))
