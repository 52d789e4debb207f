"""The bot's pure parts: prompt moderation, server settings parsing."""

from __future__ import annotations

import pytest

from bot.cogs.admin import _edited
from bot.errors import Refusal
from bot.guilds import GuildConfig
from bot.moderation import check_prompt
from core import find_term


@pytest.mark.parametrize(
    ("prompt", "found"),
    [
        ("a NUDE statue", "nude"),
        ("nudes", "nudes"),
        ("Ｎｕｄｅ", "nude"),
        ("nu\u200bde beach", "nude"),
        ("denuded hills", None),
        ("essex county", None),
        ("a gory scene", "gory"),
    ],
)
def test_nsfw_terms_match_whole_words(prompt: str, found: str | None):
    from bot.moderation import NSFW_TERMS

    assert find_term(prompt, NSFW_TERMS) == found


def test_policies():
    strict = {"banned": ("clown",), "nsfw_policy": "strict"}
    assert "does not allow" in check_prompt("a Clown", **strict, age_restricted=True)
    assert "on this server" in check_prompt("nude", **strict, age_restricted=True)
    default = {"banned": (), "nsfw_policy": "age_restricted"}
    assert check_prompt("nude", **default, age_restricted=True) is None
    assert "age-restricted" in check_prompt("nude", **default, age_restricted=False)
    assert check_prompt("nude", banned=(), nsfw_policy="off", age_restricted=False) is None
    # The banned list applies in age-restricted channels too.
    assert check_prompt("clown", banned=("clown",), nsfw_policy="off", age_restricted=True)
    assert find_term("spiders!", ("spider*",)) == "spiders"
    assert find_term("a (weird) word", ("(weird)",)) == "(weird)"  # regex characters escaped
    assert find_term("weird", ("(weird)",)) is None
    assert find_term("x", ("", "  ")) is None


def test_guild_config_round_trip_and_tolerance():
    config = GuildConfig(
        channels=(1234567890123456789,),
        default_model="placeholder:default",
        banned_words=("x",),
        nsfw="strict",
        delivery="private",
    )
    data = config.to_dict()
    assert data["channels"] == ["1234567890123456789"]  # strings: snowflakes exceed JS ints
    assert GuildConfig.from_dict(data) == config
    odd = GuildConfig.from_dict({"channels": ["abc", 5], "nsfw": "???", "delivery": 3, "x": 1})
    assert odd.channels == (5,) and odd.nsfw == "age_restricted" and odd.delivery is None
    assert odd.to_dict()["x"] == 1  # unknown keys are kept
    assert config.allows_channel(1234567890123456789)
    assert not config.allows_channel(1) and config.allows_channel(1, parent_id=1234567890123456789)
    assert GuildConfig().allows_channel(None)


def test_list_settings_add_remove_clear_and_their_cap():
    assert _edited((1, 2), "add", [2, 3, 3], 3, "channels") == (1, 2, 3)
    assert _edited((1, 2), "add", [2], 2, "channels") == (1, 2)  # nothing new: not refused
    with pytest.raises(Refusal, match="At most 2 channels can be listed"):
        _edited((1, 2), "add", [3], 2, "channels")
    assert _edited(("a", "b"), "remove", ["a", "z"], 5, "words") == ("b",)
    assert _edited(("a",), "clear", [], 5, "words") == ()
    with pytest.raises(Refusal, match="add, remove or clear"):
        _edited((), "swap", [1], 2, "channels")
