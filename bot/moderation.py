"""Prompt checks that run before anything is spent: the server's banned words and NSFW policy.

Pure functions, no Discord and no I/O. Matching is case-insensitive on whole words after
Unicode normalisation (full-width letters and zero-width characters do not slip past); an
entry ending in ``*`` matches any word starting with it ("nude*" matches "nudes").
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Terms that mark a prompt as sexual or graphic. Deliberately short: it is a first filter
# in front of the providers' own moderation, not a classifier.
NSFW_TERMS: tuple[str, ...] = (
    "nsfw",
    "nude*",
    "nudity",
    "naked",
    "porn*",
    "hentai",
    "xxx",
    "sex",
    "sexual*",
    "erotic*",
    "topless",
    "bottomless",
    "genital*",
    "penis*",
    "vagina*",
    "nipple*",
    "boobs",
    "lewd",
    "fetish*",
    "bdsm",
    "orgasm*",
    "masturbat*",
    "undress*",
    "onlyfans",
    "gore",
    "gory",
    "dismember*",
    "decapitat*",
    "disembowel*",
)

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u2060\ufeff"))


def normalise(text: str) -> str:
    """Lowercase NFKC text with invisible joiners removed."""
    return unicodedata.normalize("NFKC", text).translate(_INVISIBLE).casefold()


@lru_cache(maxsize=256)
def _pattern(entries: tuple[str, ...]) -> re.Pattern[str] | None:
    parts = []
    for entry in entries:
        word = normalise(entry).strip()
        if not word:
            continue
        prefix = word.endswith("*")
        word = re.escape(word.rstrip("*").strip())
        if word:
            ending = r"\w*" if prefix else r"(?!\w)"
            parts.append(rf"(?<!\w){word}{ending}")
    return re.compile("|".join(parts)) if parts else None


def find_term(text: str, entries: tuple[str, ...]) -> str | None:
    """The first part of ``text`` matching one of ``entries``, or None."""
    pattern = _pattern(tuple(entries))
    if pattern is None or not text:
        return None
    match = pattern.search(normalise(text))
    return match.group(0) if match else None


def check_prompt(
    prompt: str, *, banned: tuple[str, ...], nsfw_policy: str, age_restricted: bool
) -> str | None:
    """Why this prompt is refused here (a user-facing sentence), or None when it may run.

    The server's banned words apply everywhere. NSFW terms are refused outside age-restricted
    channels (policy ``age_restricted``), everywhere (``strict``), or not checked (``off``).
    """
    word = find_term(prompt, banned)
    if word:
        return f"This server does not allow “{word}” in prompts. Nothing was charged."
    if nsfw_policy == "off" or (nsfw_policy == "age_restricted" and age_restricted):
        return None
    word = find_term(prompt, NSFW_TERMS)
    if word:
        where = "on this server" if nsfw_policy == "strict" else "outside age-restricted channels"
        return (
            f"This prompt looks NSFW (“{word}”), which is not allowed {where}. Nothing was charged."
        )
    return None
