"""Bugs the reliability work found outside core, kept as regression tests once fixed.

A stored server-settings document with malformed fields (any admin front end can store one:
core accepts any small JSON object) must not stop the bot at start-up.
"""

from __future__ import annotations

import pytest

from bot.guilds import GuildConfig, GuildSettings
from core import Caller

ADMIN = Caller(frontend="cli", user_id="ops", is_admin=True)
MALFORMED = [{"channels": None}, {"channels": 5}, {"channels": ["\u00b2"]}, {"banned_words": 3}]


@pytest.mark.parametrize("document", MALFORMED, ids=[str(d) for d in MALFORMED])
async def test_a_malformed_stored_guild_document_does_not_stop_the_bot(service, document):
    # Any admin front end can store such a document: core accepts any small JSON object.
    await service.set_scope_settings(ADMIN, "discord:guild:1234", document)
    settings = GuildSettings(service)
    await settings.load()
    assert settings.get(1234) == GuildConfig.from_dict({})
