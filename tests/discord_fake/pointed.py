"""``python -m tests.discord_fake.pointed MODULE [ARGS...]``: ``python -m MODULE ARGS`` with
discord.py pointed at a FakeDiscord running in another process (the test's), as the
``fake_discord`` fixture points the test process's own discord.py.

The fake's URLs come from the environment (``child_env(fake)``), so an entry point such as
``python -m bot --config PATH`` runs unchanged, as its own OS process, against the fake.
"""

from __future__ import annotations

import os
import runpy
import sys
from typing import TYPE_CHECKING

import discord
import yarl
from discord.gateway import DiscordWebSocket

if TYPE_CHECKING:
    from .server import FakeDiscord

API_ENV = "FAKE_DISCORD_API_BASE"
GATEWAY_ENV = "FAKE_DISCORD_GATEWAY_URL"


def child_env(fake: FakeDiscord) -> dict[str, str]:
    """The environment variables that point a child started through this module at ``fake``."""
    return {API_ENV: fake.api_base, GATEWAY_ENV: fake.gateway_url}


def main() -> None:
    discord.http.Route.BASE = os.environ[API_ENV]
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(os.environ[GATEWAY_ENV])
    sys.argv = sys.argv[1:]
    runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
