"""pytest fixtures and the ``logged_in`` helper for the fake Discord.

Use from a conftest::

    from tests.discord_fake.fixtures import fake_discord  # noqa: F401  (fixture)
    from tests.discord_fake import logged_in
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TypeVar

import discord
import pytest
import pytest_asyncio
import yarl
from discord.gateway import DiscordWebSocket

from .server import FakeDiscord

ClientT = TypeVar("ClientT", bound=discord.Client)


@pytest_asyncio.fixture
async def fake_discord(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    """A started FakeDiscord with discord.py's REST base and gateway URL pointed at it.

    ``discord.http.Route.BASE`` and ``DiscordWebSocket.DEFAULT_GATEWAY`` are restored by
    monkeypatch after the test; the server is closed first.
    """
    fake = FakeDiscord()
    await fake.start()
    monkeypatch.setattr(discord.http.Route, "BASE", fake.api_base)
    monkeypatch.setattr(DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(fake.gateway_url))
    try:
        yield fake
    finally:
        await fake.close()


@contextlib.asynccontextmanager
async def logged_in(
    client: ClientT,
    fake: FakeDiscord,
    token: str = "fake-token",
    *,
    timeout: float = 10.0,
    guild_ready_timeout: float = 0.1,
) -> AsyncIterator[ClientT]:
    """Run ``client.start(token)`` in a task against ``fake`` until ``on_ready``; close on exit.

    ``guild_ready_timeout`` (discord.py waits that long after the last GUILD_CREATE before
    firing ``on_ready``; default 2 s) is lowered so login takes ~0.1 s. Errors raised by
    ``login``/``setup_hook``/the gateway loop propagate. On exit the client is closed and its
    task awaited, so no unclosed-session warnings are left behind.
    """
    client._connection.guild_ready_timeout = guild_ready_timeout
    task = asyncio.create_task(client.start(token), name=f"fake-discord-{type(client).__name__}")
    task.add_done_callback(lambda _: fake.notify())
    ready_waiter: asyncio.Task[None] | None = None
    try:
        # ``wait_until_ready`` only works once login has created the client's ready event;
        # login's first REST call (GET /users/@me) wakes this wait.
        await fake.wait_until(
            lambda: task.done() or client._ready is not discord.utils.MISSING,
            timeout,
            "client login",
        )
        if not task.done():
            ready_waiter = asyncio.create_task(client.wait_until_ready())
            done, _ = await asyncio.wait(
                {task, ready_waiter}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
            )
            if not done:
                raise TimeoutError(f"client was not ready within {timeout}s")
        if task.done():
            task.result()  # re-raise a login/connect failure
            raise RuntimeError("client.start() returned before the client became ready")
        yield client
    finally:
        if ready_waiter is not None and not ready_waiter.done():
            ready_waiter.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ready_waiter
        await client.close()
        if not task.done():
            try:
                await asyncio.wait_for(task, timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        elif not task.cancelled():
            task.exception()  # mark retrieved; a failure was already re-raised above
