"""Discord sharding: two bot OS processes (``python -m bot``), shards 0 and 1 of 2
(``[discord] shard_count``/``shard_ids``), each with its own config file, against the fake
Discord, which sends each shard only the events of its own servers, as Discord does
((guild_id >> 22) % shard_count). Both share one PostgreSQL database, as two processes on two
hosts would."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from core import Caller, ConfigError, ImageService, parse_settings
from tests.bot.conftest import FOLLOWUP, TOKEN, bot_settings
from tests.conftest import PG_URL_ENV
from tests.discord_fake import FakeDiscord
from tests.discord_fake.pointed import child_env

ROOT = Path(__file__).resolve().parents[2]


def _shard(guild_id: int) -> int:
    return (guild_id >> 22) % 2


@contextlib.asynccontextmanager
async def shard_processes(
    fake: FakeDiscord, folder: Path, pg_url: str
) -> AsyncIterator[list[asyncio.subprocess.Process]]:
    """``python -m bot --config shardN.toml`` as shards 0 and 1 of 2, pointed at ``fake``;
    on exit shard 0 is stopped with SIGINT (Ctrl-C) and shard 1 with SIGTERM (``docker stop``,
    systemd): both must exit 0. Killed whatever happened."""
    env = {**os.environ, **child_env(fake), "PYTHONPATH": str(ROOT), PG_URL_ENV: pg_url}
    env["DISCORD_TOKEN"] = TOKEN
    processes: list[asyncio.subprocess.Process] = []
    try:
        for n in (0, 1):
            config = folder / f"shard{n}.toml"
            config.write_text(
                f'[database]\nurl_env = "{PG_URL_ENV}"\n[images]\ndir = "{folder / "images"}"\n'
                f"[discord]\nshard_count = 2\nshard_ids = [{n}]\n",
                encoding="utf-8",
            )
            with (folder / f"shard{n}.log").open("wb") as log:
                processes.append(
                    await asyncio.create_subprocess_exec(
                        sys.executable,
                        "-m",
                        "tests.discord_fake.pointed",
                        "bot",
                        "--config",
                        str(config),
                        "-v",
                        cwd=str(ROOT),
                        env=env,
                        stdout=log,
                        stderr=log,
                    )  # fmt: skip
                )
        yield processes
        for process, stop in zip(processes, (signal.SIGINT, signal.SIGTERM), strict=True):
            process.send_signal(stop)
        with anyio.fail_after(20):
            assert [await process.wait() for process in processes] == [0, 0]
    except BaseException:
        for n in (0, 1):  # shown by pytest with the failure
            print(f"--- shard {n} ---\n" + (folder / f"shard{n}.log").read_text(errors="replace"))
        raise
    finally:
        for process in processes:
            if process.returncode is None:
                process.kill()
                await process.wait()


async def test_two_shard_processes_each_handle_only_their_own_servers(
    fake_discord: FakeDiscord, tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
):
    fake = fake_discord
    guilds = [fake.guild, fake.add_guild("Shard neighbour", guild_id=fake.guild.id + (1 << 22))]
    guilds.sort(key=lambda guild: _shard(guild.id))
    assert [_shard(guild.id) for guild in guilds] == [0, 1]
    monkeypatch.setenv(PG_URL_ENV, pg_url)
    settings = bot_settings(tmp_path, database={"url_env": PG_URL_ENV})
    # Opened first, so the database is migrated before the shards start together.
    async with await ImageService.open(settings, sweeper=False) as service:
        async with shard_processes(fake, tmp_path, pg_url) as processes:
            await fake.wait_until(
                lambda: (
                    sorted(s.shard for s in fake.sessions()) == [(0, 2), (1, 2)]
                    or any(p.returncode is not None for p in processes)
                ),
                30,
                "both shards connected",
            )
            assert [p.returncode for p in processes] == [None, None]
            for n, guild in enumerate(guilds):
                handle = await fake.slash("imagine", {"prompt": f"shard {n}"}, guild=guild)
                await fake.wait_for_call(
                    "POST",
                    FOLLOWUP,
                    20,
                    predicate=lambda c, h=handle: bool(c.files) and h.token in c.path,
                )
            received = sorted(
                (sess.shard[0], event, int(data.get("guild_id") or data["id"]))
                for sess in fake.sessions()
                for event, data in sess.events
                if event in ("GUILD_CREATE", "INTERACTION_CREATE")
            )
            ran_by = await service.db.fetchall(
                "SELECT j.request, i.pid FROM job j JOIN instance i ON i.instance_id = j.owner"
            )
        # A clean stop, by SIGINT or SIGTERM, drops each shard's lease at once.
        leases = await service.db.fetchall("SELECT pid FROM instance")
        assert {pid for (pid,) in leases}.isdisjoint(p.pid for p in processes)
        alice = Caller(frontend="discord", user_id=str(fake.user.id))
        assert (await service.quota(alice)).remaining == 48  # both charged the one ledger
        assert await service.quotas.check_ledger() == []
    # Each shard was sent only its own server and that server's interaction ...
    assert received == [
        (n, event, guild.id)
        for n, guild in enumerate(guilds)
        for event in ("GUILD_CREATE", "INTERACTION_CREATE")
    ]
    # ... and its own process ran the job and answered (the job's owner is its lease).
    ran_on = {json.loads(request)["prompt"]: pid for request, pid in ran_by}
    assert ran_on == {f"shard {n}": process.pid for n, process in enumerate(processes)}


def test_shard_settings_are_checked():
    with pytest.raises(ConfigError, match="shard_ids needs shard_count"):
        parse_settings({"discord": {"shard_ids": [0]}})
    with pytest.raises(ConfigError, match="from 0 to 1"):
        parse_settings({"discord": {"shard_count": 2, "shard_ids": [2]}})
