"""Styles and personal preferences in the core, on both database backends."""

from __future__ import annotations

import pytest

from core import Caller, ImageService, InvalidRequestError, NotFoundError, make_style
from core.errors import ConfigError, PermissionDeniedError
from tests.conftest import make_settings

ADMIN = Caller(frontend="discord", user_id="1", is_admin=True)
ALICE = Caller(frontend="discord", user_id="2")
BOB = Caller(frontend="mcp", user_id="bob")
SERVER = "discord:guild:77"
STYLES = {
    "noir": {
        "prompt": "{prompt}, film noir, high contrast",
        "negative_prompt": "colour",
        "aspect": "16:9",
        "description": "black and white crime film",
    }
}


@pytest.fixture
async def service(tmp_path, backend):
    settings = make_settings(
        tmp_path, database=backend, styles=STYLES, moderation={"banned_words": ["gore"]}
    )
    svc = await ImageService.open(settings, sweeper=False)
    yield svc
    await svc.aclose()


async def test_config_and_server_styles_are_listed_and_applied(service: ImageService):
    assert [s.name for s in await service.styles()] == ["noir"]
    await service.add_style(ADMIN, SERVER, make_style("comic", "comic panel of {prompt}"))
    assert [(s.name, s.source) for s in await service.styles(SERVER)] == [
        ("noir", "config"),
        ("comic", SERVER),
    ]
    assert [s.name for s in await service.styles("discord:guild:78")] == ["noir"]

    request = await service.personalise(ALICE, "generate", style="noir", prompt="a cat")
    assert request.prompt == "a cat, film noir, high contrast"
    assert request.negative_prompt == "colour"
    assert request.aspect_ratio == "16:9"
    explicit = await service.personalise(
        ALICE, "generate", style="NOIR", prompt="a cat", negative_prompt="dogs", aspect_ratio="1:1"
    )
    assert (explicit.negative_prompt, explicit.aspect_ratio) == ("dogs, colour", "1:1")
    with pytest.raises(NotFoundError):
        await service.personalise(ALICE, "generate", style="comic", prompt="x")  # other scope

    await service.remove_style(ADMIN, SERVER, "comic")
    assert [s.name for s in await service.styles(SERVER)] == ["noir"]
    with pytest.raises(NotFoundError):
        await service.remove_style(ADMIN, SERVER, "comic")


async def test_style_text_passes_the_filters(service: ImageService):
    with pytest.raises(InvalidRequestError, match="gore"):
        await service.add_style(ADMIN, SERVER, make_style("bad", "{prompt} with G\u200bORE"))
    with pytest.raises(PermissionDeniedError):
        await service.add_style(ALICE, SERVER, make_style("mine", "{prompt}"))
    with pytest.raises(InvalidRequestError, match="own styles"):
        await service.add_style(ADMIN, SERVER, make_style("noir", "{prompt}"))
    with pytest.raises(InvalidRequestError, match=r"\{prompt\}"):
        make_style("plain", "no placeholder")
    # A style whose text is banned is refused when used, before anything is reserved.
    await service.scopes.put("styles:" + SERVER, {"sneaky": {"prompt": "{prompt}, gore"}}, by="x")
    request = await service.personalise(
        ALICE, "generate", style="sneaky", scope=SERVER, prompt="a cat"
    )
    with pytest.raises(InvalidRequestError, match="gore"):
        await service.generate(ALICE, request)
    assert (await service.quota(ALICE)).held == 0


async def test_preferences_fill_what_was_left_out(service: ImageService):
    prefs = await service.set_preferences(
        ALICE, style="noir", count=2, delivery="dm", model="placeholder:default"
    )
    assert (prefs.style, prefs.count, prefs.delivery) == ("noir", 2, "dm")
    assert await service.preferences(ALICE) == prefs
    assert (await service.preferences(BOB)).style is None  # per user
    request = await service.personalise(ALICE, "generate", prompt="a boat")
    assert (request.prompt, request.n, request.aspect_ratio) == (
        "a boat, film noir, high contrast",
        2,
        "16:9",
    )
    assert request.model == "placeholder:default"
    explicit = await service.personalise(ALICE, "generate", prompt="a boat", n=1)
    assert explicit.n == 1
    with pytest.raises(InvalidRequestError, match="number of images"):
        await service.personalise(ALICE, "generate", prompt="a boat", n=0)  # not the default
    cleared = await service.set_preferences(ALICE, style="", count=0)
    assert (cleared.style, cleared.count, cleared.delivery) == (None, 0, "dm")
    with pytest.raises(InvalidRequestError):
        await service.set_preferences(ALICE, delivery="carrier pigeon")
    with pytest.raises(NotFoundError):
        await service.set_preferences(ALICE, style="nope")


async def test_a_preferred_style_that_was_removed_is_skipped(service: ImageService):
    await service.add_style(ADMIN, SERVER, make_style("comic", "comic panel of {prompt}"))
    await service.set_preferences(ALICE, style="comic", scope=SERVER)
    await service.remove_style(ADMIN, SERVER, "comic")
    request = await service.personalise(ALICE, "generate", scope=SERVER, prompt="a cat")
    assert request.prompt == "a cat"


def test_config_styles_are_checked_at_load(tmp_path):
    with pytest.raises(ConfigError, match=r"styles\.bad"):
        make_settings(tmp_path, styles={"bad": {"prompt": "no placeholder"}})
