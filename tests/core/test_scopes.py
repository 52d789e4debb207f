"""Scope settings: small JSON documents per community, admin-only writes, survive a restart
(on both database backends)."""

from __future__ import annotations

import pytest

from core import Caller, ImageService, InvalidRequestError, PermissionDeniedError
from tests.conftest import make_settings

ADMIN = Caller(frontend="discord", user_id="1", is_admin=True)
USER = Caller(frontend="discord", user_id="2")


@pytest.fixture
async def service(tmp_path, backend):
    svc = await ImageService.open(make_settings(tmp_path, database=backend), sweeper=False)
    yield svc
    await svc.aclose()


async def test_set_get_list_and_clear(service: ImageService):
    assert await service.get_scope_settings("discord:guild:1") == {}
    stored = await service.set_scope_settings(ADMIN, "discord:guild:1", {"nsfw": "strict", "n": 1})
    assert stored == {"nsfw": "strict", "n": 1}
    await service.set_scope_settings(ADMIN, "discord:guild:2", {"delivery": "private"})
    await service.set_scope_settings(ADMIN, "mcp:deploy:x", {"a": True})
    assert await service.get_scope_settings("discord:guild:1") == {"nsfw": "strict", "n": 1}
    assert set(await service.all_scope_settings("discord:guild:")) == {
        "discord:guild:1",
        "discord:guild:2",
    }
    await service.set_scope_settings(ADMIN, "discord:guild:1", {})
    assert await service.get_scope_settings("discord:guild:1") == {}


async def test_only_admins_write_and_bad_input_is_refused(service: ImageService):
    with pytest.raises(PermissionDeniedError):
        await service.set_scope_settings(USER, "discord:guild:1", {"x": 1})
    for scope in ("", "discord", "Discord:guild:1", "discord:guild:1; DROP TABLE"):
        with pytest.raises(InvalidRequestError):
            await service.set_scope_settings(ADMIN, scope, {"x": 1})
    with pytest.raises(InvalidRequestError):
        await service.set_scope_settings(ADMIN, "discord:guild:1", {"x": float("nan")})
    with pytest.raises(InvalidRequestError):
        await service.set_scope_settings(ADMIN, "discord:guild:1", {"x": "y" * 40_000})


async def test_like_prefix_is_literal(service: ImageService):
    await service.set_scope_settings(ADMIN, "discord:guildx:1", {"x": 1})
    await service.set_scope_settings(ADMIN, "discord:guild_1:1", {"x": 1})
    assert await service.all_scope_settings("discord:guild_") == {"discord:guild_1:1": {"x": 1}}


async def test_survives_reopen(tmp_path, backend):
    settings = make_settings(tmp_path, database=backend)
    async with await ImageService.open(settings, sweeper=False) as service:
        await service.set_scope_settings(ADMIN, "discord:guild:7", {"banned_words": ["x"]})
    async with await ImageService.open(settings, sweeper=False) as service:
        assert await service.get_scope_settings("discord:guild:7") == {"banned_words": ["x"]}
