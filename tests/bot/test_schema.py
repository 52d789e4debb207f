"""The command schema, checked offline against Discord's limits and a stored snapshot.

Regenerate the snapshot after an intended change with ``UPDATE_SNAPSHOTS=1 pytest tests/bot``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

from bot import views
from bot.app import create_bot
from core import ImageService
from tests.bot.conftest import bot_settings

SNAPSHOT = Path(__file__).parent / "snapshots" / "commands.json"
NAME = re.compile(r"^[-_'\w]{1,32}$")


@pytest.fixture
async def schema(tmp_path: Path) -> list[dict[str, Any]]:
    settings = bot_settings(tmp_path)
    async with await ImageService.open(settings, sweeper=False) as service:
        bot = create_bot(service, settings, sync_commands=False)
        await bot.setup_hook()
        commands = [c.to_dict(bot.tree) for c in bot.tree.get_commands(type=None)]
        await bot.close()
    return sorted(commands, key=lambda c: (c["type"], c["name"]))


def _walk(options: list[dict[str, Any]], path: str):
    assert len(options) <= 25, f"{path}: more than 25 options"
    required_done = False
    for option in options:
        where = f"{path} {option['name']}"
        assert NAME.fullmatch(option["name"]) and option["name"] == option["name"].lower(), where
        assert 1 <= len(option["description"]) <= 100, where
        assert len(option.get("choices") or []) <= 25, f"{where}: more than 25 choices"
        for choice in option.get("choices") or []:
            assert 1 <= len(choice["name"]) <= 100, where
        if option["type"] in (1, 2):
            yield where
            yield from _walk(option.get("options", []), where)
        else:
            # Required options must come before optional ones (Discord rejects the sync).
            if option.get("required"):
                assert not required_done, f"{where}: required after optional"
            else:
                required_done = True


def test_commands_respect_discord_limits(schema: list[dict[str, Any]]):
    assert len(schema) <= 100
    names = set()
    for command in schema:
        names.add((command["type"], command["name"]))
        if command["type"] == 1:
            assert NAME.fullmatch(command["name"]), command["name"]
            assert 1 <= len(command["description"]) <= 100, command["name"]
            list(_walk(command.get("options", []), command["name"]))
        else:
            assert 1 <= len(command["name"]) <= 32
    assert names == {
        (1, "imagine"),
        (1, "edit"),
        (1, "upscale"),
        (1, "quota"),
        (1, "models"),
        (1, "settings"),
        (1, "history"),
        (1, "show"),
        (1, "imagegate"),
        (3, "Upscale"),
        (3, "Edit image"),
    }


def test_imagegate_group_is_seen_by_members_for_their_token(schema: list[dict[str, Any]]):
    admin = next(c for c in schema if c["name"] == "imagegate")
    # Every member may get a token; the bot checks the other commands on every use.
    assert admin["default_member_permissions"] is None
    assert admin["contexts"] == [0]  # servers only
    subcommands = {o["name"] for o in admin["options"]}
    assert {"token", "grant", "allowance", "settings", "styles"} <= subcommands
    styles = next(o for o in admin["options"] if o["name"] == "styles")
    assert [o["name"] for o in styles["options"]] == ["add", "remove", "list"]
    settings = next(o for o in admin["options"] if o["name"] == "settings")
    assert {o["name"] for o in settings["options"]} == {
        "show",
        "channels",
        "model",
        "banned",
        "nsfw",
        "delivery",
    }


def test_imagine_options(schema: list[dict[str, Any]]):
    imagine = next(c for c in schema if c["name"] == "imagine")
    options = {o["name"]: o for o in imagine["options"]}
    assert list(options) == [
        *("prompt", "negative", "model", "count", "aspect", "seed", "steps", "guidance"),
        *("style", "spoiler"),
    ]
    assert options["style"]["autocomplete"] is True
    assert options["count"]["min_value"] == 1 and options["count"]["max_value"] == 4
    assert (options["steps"]["min_value"], options["steps"]["max_value"]) == (1, 200)
    assert (options["guidance"]["min_value"], options["guidance"]["max_value"]) == (0, 50)
    upscale = next(c for c in schema if c["name"] == "upscale")
    scale = next(o for o in upscale["options"] if o["name"] == "scale")
    assert [c["value"] for c in scale["choices"]] == [2, 3, 4]
    assert options["model"]["autocomplete"] is True
    assert len(options["aspect"]["choices"]) >= 5


def test_schema_matches_snapshot(schema: list[dict[str, Any]]):
    text = json.dumps(schema, indent=2, sort_keys=True) + "\n"
    if os.environ.get("UPDATE_SNAPSHOTS") or not SNAPSHOT.exists():
        SNAPSHOT.parent.mkdir(exist_ok=True)
        SNAPSHOT.write_text(text, encoding="utf-8")
    assert text == SNAPSHOT.read_text(encoding="utf-8"), "schema changed: see the docstring"


def test_result_buttons_fit_discord_limits():
    job = "f" * 16
    view = views.result_view(job, "generate", 4)
    rows: dict[int, int] = {}
    for item in view.children:
        assert len(item.custom_id) <= 100 and len(item.item.label) <= 80
        rows[item.row] = rows.get(item.row, 0) + 1
    assert max(rows.values()) <= 5 and len(rows) <= 5
    assert [i.item.label for i in view.children] == [
        "Reroll",
        "Variations",
        "Remix",
        "Delete",
        "Upscale 1",
        "Upscale 2",
        "Upscale 3",
        "Upscale 4",
    ]
    assert view.children[0].custom_id == f"imagegate:reroll:{job}"
    assert view.children[2].custom_id == f"imagegate:remix:{job}"
    assert view.children[4].custom_id == f"imagegate:upscale:{job}:1"
    # The longest job id the templates accept still fits.
    assert len(views.custom_id("upscale", "x" * 64, 10)) <= 100
    upscaled = views.result_view(job, "upscale", 1)
    assert [i.item.label for i in upscaled.children] == ["Variations", "Delete"]
