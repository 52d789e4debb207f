"""Discord sharding: two bots as shards 0 and 1 of 2 (``[discord] shard_count``/``shard_ids``)
against the fake Discord, which sends each shard only the events of its own servers, as
Discord does ((guild_id >> 22) % shard_count). Each bot has its own ImageService on one
shared PostgreSQL database, as two processes on two hosts would."""

from __future__ import annotations

import pytest

from core import ConfigError, parse_settings
from tests.bot.conftest import FOLLOWUP, bot_settings, running
from tests.conftest import PG_URL_ENV
from tests.discord_fake import FakeDiscord


def _shard(guild_id: int) -> int:
    return (guild_id >> 22) % 2


async def test_two_shards_each_handle_only_their_own_servers(
    fake_discord: FakeDiscord, tmp_path, pg_url, monkeypatch
):
    fake = fake_discord
    first = fake.guild
    second = fake.add_guild("Shard neighbour", guild_id=first.id + (1 << 22))
    by_shard = {_shard(first.id): first, _shard(second.id): second}
    assert set(by_shard) == {0, 1}
    monkeypatch.setenv(PG_URL_ENV, pg_url)
    database = {"url_env": PG_URL_ENV}

    def shard(n: int):
        discord = {"shard_count": 2, "shard_ids": [n]}
        return bot_settings(tmp_path / f"s{n}", database=database, discord=discord)

    async with running(fake, shard(0)) as zero, running(fake, shard(1)) as one:
        for n, env in enumerate((zero, one)):
            assert [g.id for g in env.bot.guilds] == [by_shard[n].id]
        handles = {
            n: await fake.slash("imagine", {"prompt": f"made on shard {n}"}, guild=by_shard[n])
            for n in (0, 1)
        }
        for handle in handles.values():
            await handle.wait_callback()
            await fake.wait_for_call(
                "POST", FOLLOWUP, predicate=lambda c, h=handle: bool(c.files) and h.token in c.path
            )
        # Each interaction went to one shard only (below), so that shard answered it; both
        # charged the one ledger they share.
        assert await zero.remaining(fake.user) == await one.remaining(fake.user) == 48
        sent = [
            (sess.shard, int(data["guild_id"]))
            for sess in fake.sessions()
            for event, data in sess.events
            if event == "INTERACTION_CREATE"
        ]
    assert sorted(sent) == [((0, 2), by_shard[0].id), ((1, 2), by_shard[1].id)]


def test_shard_settings_are_checked():
    with pytest.raises(ConfigError, match="shard_ids needs shard_count"):
        parse_settings({"discord": {"shard_ids": [0]}})
    with pytest.raises(ConfigError, match="from 0 to 1"):
        parse_settings({"discord": {"shard_count": 2, "shard_ids": [2]}})
