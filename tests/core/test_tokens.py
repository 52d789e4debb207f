"""Hashed tokens: shown once, stored as a digest, verified per kind, listed, revoked by prefix."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from core import Caller, ImageService, InvalidRequestError, NotFoundError, PermissionDeniedError
from core.tokens import TokenStore
from tests.conftest import make_settings

ADMIN = Caller(frontend="cli", user_id="ops", is_admin=True)
USER = Caller(frontend="discord", user_id="2")


async def test_mint_stores_only_the_digest_and_verifies(service: ImageService, tmp_path):
    token, info = await service.mint_token(ADMIN, "admin", "cli:ops", label="laptop")
    assert token.startswith(f"ig_admin_{info.prefix}_") and info.active
    rows = sqlite3.connect(tmp_path / "imagegate.db").execute("SELECT * FROM api_token").fetchall()
    assert len(rows) == 1
    assert token not in repr(rows)
    assert hashlib.sha256(token.encode()).hexdigest() in rows[0]
    seen = await service.verify_token("admin", token)
    assert seen is not None and seen.user == "cli:ops" and seen.label == "laptop"
    assert seen.last_used_at is not None


async def test_wrong_kind_tampered_or_junk_tokens_fail(service: ImageService):
    token, _ = await service.mint_token(ADMIN, "mcp", "alice")
    assert await service.verify_token("admin", token) is None
    assert await service.verify_token("admin", token.replace("ig_mcp_", "ig_admin_")) is None
    tampered = token[:-1] + ("A" if token[-1] != "A" else "B")
    assert await service.verify_token("mcp", tampered) is None
    for junk in ("", "x", "ig_mcp_", "ig_mcp_short_x", "a" * 10_000, "ig_mcp_ABCDEFGH_" + "x" * 43):
        assert await service.verify_token("mcp", junk) is None
    assert await service.verify_token("mcp", token) is not None


async def test_list_and_revoke_by_prefix(service: ImageService):
    one, a = await service.mint_token(ADMIN, "admin", "cli:a")
    two, b = await service.mint_token(ADMIN, "admin", "cli:b")
    await service.mint_token(ADMIN, "mcp", "bob")
    assert {i.prefix for i in await service.list_tokens(ADMIN, "admin")} == {a.prefix, b.prefix}
    assert len(await service.list_tokens(ADMIN)) == 3
    revoked = await service.revoke_token(ADMIN, "admin", a.shown)  # as the list shows it
    assert revoked.revoked_at is not None and revoked.user == "cli:a"
    await service.revoke_token(ADMIN, "admin", a.prefix)  # twice: harmless
    assert await service.verify_token("admin", one) is None
    assert await service.verify_token("admin", two) is not None
    assert [i.prefix for i in await service.list_tokens(ADMIN, "admin")] == [b.prefix]
    listed = await service.list_tokens(ADMIN, "admin", include_revoked=True)
    assert {i.prefix for i in listed} == {a.prefix, b.prefix}
    with pytest.raises(NotFoundError):
        await service.revoke_token(ADMIN, "mcp", b.prefix)  # an admin token is not an mcp one


async def test_only_admins_manage_tokens_and_bad_input_is_refused(service: ImageService):
    with pytest.raises(PermissionDeniedError):
        await service.mint_token(USER, "admin", "discord:2")
    with pytest.raises(PermissionDeniedError):
        await service.list_tokens(USER)
    with pytest.raises(PermissionDeniedError):
        await service.revoke_token(USER, "admin", "ABCDEFGH")
    for kind, user in (("Admin", "x"), ("", "x"), ("admin", ""), ("admin", "a b")):
        with pytest.raises(InvalidRequestError):
            await service.mint_token(ADMIN, kind, user)


async def test_last_used_is_refreshed_at_most_once_a_minute(service: ImageService):
    now = [1_000_000.0]
    store = TokenStore(service.db, clock=lambda: now[0])
    token, _ = await store.mint("mcp", "alice")
    first = await store.verify("mcp", token)
    now[0] += 30
    await store.verify("mcp", token)
    (listed,) = await store.list("mcp")
    assert listed.last_used_at == first.last_used_at  # type: ignore[union-attr]
    now[0] += 31
    await store.verify("mcp", token)
    (listed,) = await store.list("mcp")
    assert listed.last_used_at.timestamp() == now[0]  # type: ignore[union-attr]


async def test_tokens_survive_reopen(tmp_path):
    settings = make_settings(tmp_path)
    async with await ImageService.open(settings, sweeper=False) as service:
        token, _ = await service.mint_token(ADMIN, "admin", "cli:ops")
    async with await ImageService.open(settings, sweeper=False) as service:
        assert await service.verify_token("admin", token) is not None


async def test_members_mint_and_revoke_tokens_for_their_own_credits_only(service: ImageService):
    other = Caller(frontend="discord", user_id="3")
    token, info = await service.mint_own_token(USER, label="my agent")
    assert info.user == "discord:2" and info.kind == "mcp"
    seen = await service.verify_token("mcp", token)
    assert seen is not None and seen.user == "discord:2"
    assert [t.prefix for t in await service.own_tokens(USER)] == [info.prefix]
    assert await service.own_tokens(other) == []
    with pytest.raises(NotFoundError):
        await service.revoke_own_token(other, info.prefix)  # not theirs: it does not exist
    assert await service.verify_token("mcp", token) is not None
    revoked = await service.revoke_own_token(USER, info.shown)
    assert not revoked.active and await service.verify_token("mcp", token) is None
    for _ in range(5):
        await service.mint_own_token(USER)
    with pytest.raises(InvalidRequestError, match="5 active tokens"):
        await service.mint_own_token(USER)
    assert await service.has_tokens("mcp") and not await service.has_tokens("admin")
