"""Prompt normalisation and word filters (core.moderation): the filters see exactly the text a
provider receives, and invisible, control or space characters never hide a banned word."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core import (
    NSFW_TERMS,
    Caller,
    ImageRequest,
    ImageService,
    InvalidRequestError,
    filter_form,
    find_term,
    normalise_prompt,
)
from tests.conftest import make_settings

# Characters an attacker may slip into a word: every control, format and space character.
HIDING = st.characters(categories=("Cc", "Cf", "Zs", "Zl", "Zp"))
# Banned words as an operator writes them: a few letters (any script) and maybe a prefix star.
WORDS = st.text(st.characters(categories=("Ll", "Lu", "Lo")), min_size=2, max_size=8)


@st.composite
def hidden(draw: st.DrawFn, word: str) -> str:
    """``word`` with hiding characters inserted anywhere (between letters and at the ends)."""
    out = []
    for ch in word:
        out.append(draw(st.text(HIDING, max_size=3)))
        out.append(ch)
    out.append(draw(st.text(HIDING, max_size=3)))
    return "".join(out)


def _matchable(word: str) -> bool:
    """A word whose filter form is still a run of word characters (some letters fold or
    decompose into marks or nothing; those are not words an operator can ban)."""
    form = filter_form(word)
    return len(form) >= 2 and all(c.isalnum() for c in form)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_banned_word_with_inserted_hiding_characters_never_passes(data: st.DataObject):
    word = data.draw(st.sampled_from(NSFW_TERMS) | WORDS.filter(_matchable))
    entry = word if word in NSFW_TERMS else data.draw(st.sampled_from([word, word + "*"]))
    bare = entry.rstrip("*")
    prompt = f"a {data.draw(hidden(bare))} in the rain"
    assert find_term(prompt, (entry,)) is not None, (entry, prompt)
    # And through the request the provider receives, checked the way the service does.
    request = ImageRequest(prompt=prompt, negative_prompt=prompt)
    assert all(find_term(text, (entry,)) for text in request.provider_texts())


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=60))
def test_filters_see_what_the_provider_receives(text: str):
    sent = normalise_prompt(text)
    assert normalise_prompt(sent) == sent  # idempotent: stored, re-run, filtered alike
    assert filter_form(text) == filter_form(sent)
    assert sent == sent.strip() and "  " not in sent
    assert not any(unicodedata.category(c)[0] == "C" for c in sent)
    assert all(c == " " or not c.isspace() for c in sent)


@pytest.mark.parametrize(
    ("prompt", "sent"),
    [
        ("a n\u200eude statue", "a nude statue"),  # left-to-right mark (Cf)
        ("Ｎｕｄｅ\u00a0beach", "Nude beach"),  # full-width letters, no-break space
        ("nu\ufe0fde \u3164 at\tnight\n", "nude at night"),  # variation selector, filler
        ("\x00a\x07 cat\x1f", "a cat"),
        ("e\u200b\u0301", "é"),  # composes once the invisible character is gone
    ],
)
def test_what_a_provider_receives(prompt: str, sent: str):
    assert ImageRequest(prompt=prompt).prompt == sent
    assert find_term(prompt, ("nude",)) == ("nude" if "ude" in sent.casefold() else None)


def test_spaces_inside_a_word_do_not_hide_it_but_words_stay_whole():
    assert find_term("a n u d e figure", NSFW_TERMS) == "n u d e"
    assert find_term("a nu\u2003de figure", NSFW_TERMS) == "nu de"
    for innocent in ("denuded hills", "essex county", "in under", "go red", "is explicit"):
        assert find_term(innocent, NSFW_TERMS) is None, innocent
    assert find_term("STRASSE", ("straße",)) == "strasse"
    assert find_term("x", ("", " * ", "\u200b")) is None


async def test_the_operators_list_refuses_every_text_before_any_hold(tmp_path):
    settings = make_settings(tmp_path, moderation={"banned_words": ["clown*", "red panda"]})
    service = await ImageService.open(settings, sweeper=False)
    caller = Caller.parse("mcp:ann")
    try:
        for fields in (
            {"prompt": "two C\u200bLOWNS"},
            {"prompt": "a forest", "negative_prompt": "red\u2060 panda"},
            {"prompt": "a redpanda"},
        ):
            with pytest.raises(InvalidRequestError, match="does not allow"):
                await service.generate(caller, ImageRequest(**fields))
        assert (await service.db.fetchone("SELECT count(*) FROM hold"))[0] == 0
        ok = await service.generate(caller, ImageRequest(prompt="a red fox"))
        assert ok.credits_charged == 1
    finally:
        await service.aclose()
