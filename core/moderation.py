"""The text a provider receives, and the word filters that check exactly that text.

``normalise_prompt`` is the one place that decides what reaches a provider: NFKC, every
invisible code point removed (Unicode control, format, surrogate, private-use and unassigned
characters, and the default-ignorable ones such as variation selectors and the Hangul fillers),
every run of whitespace folded into one space, trimmed. ``ImageRequest`` applies it to the
prompt and the negative prompt, so adapters only ever send normalised text.

The filters (an operator's ``[moderation] banned_words``, a Discord server's banned words and
NSFW policy) match that same text, case-folded (``filter_form``), so a word split by invisible
characters is still the word. Entries are case-insensitive whole words or phrases; ``word*``
matches any word starting with ``word``; spaces inside a word do not hide it ("n u d e" matches
"nude"), since a provider may still read it as the word. A first filter in front of the
providers' own moderation, not a classifier: look-alike letters from other scripts and
punctuation inside words are not caught.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from functools import lru_cache

# Terms that mark a prompt as sexual or graphic. Deliberately short (see above).
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

# Default_Ignorable_Code_Point (Unicode DerivedCoreProperties) outside the C* categories: shown
# as nothing, so a provider's tokenizer may drop them too.
_IGNORABLE_RANGES = (
    (0x034F, 0x034F),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFFA0, 0xFFA0),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0FFF),
)
# ASCII controls: whitespace ones become a space, the others go.
_ASCII_CONTROLS = {c: " " if chr(c).isspace() else None for c in (*range(32), 127)}


def normalise_prompt(text: str) -> str:
    """``text`` as a provider receives it: NFKC, no invisible characters, whitespace folded
    to single spaces, trimmed. Idempotent."""
    if text.isascii():
        return " ".join(text.translate(_ASCII_CONTROLS).split())
    text = unicodedata.normalize("NFKC", text)
    text = "".join(" " if ch.isspace() else ch for ch in text if ch.isspace() or _shown(ch))
    # Removing a character can leave a pair NFKC composes (e + ZWSP + U+0301).
    return " ".join(unicodedata.normalize("NFKC", text).split())


def filter_form(text: str) -> str:
    """``normalise_prompt(text)`` case-folded (and normalised again: folding can decompose):
    the text every filter matches."""
    return normalise_prompt(normalise_prompt(text).casefold())


def find_term(text: str, entries: Iterable[str]) -> str | None:
    """The part of ``text`` (in ``filter_form``) that matches one of ``entries``, or None."""
    pattern = _pattern(tuple(entries))
    if pattern is None or not text:
        return None
    match = pattern.search(filter_form(text))
    return match.group(0) if match else None


def find_in_texts(texts: Iterable[str | None], entries: Iterable[str]) -> str | None:
    """``find_term`` over several texts (a prompt and a negative prompt, ...); first match."""
    if isinstance(texts, str):  # one text, not its characters
        texts = (texts,)
    entries = tuple(entries)
    for text in texts:
        if text and (found := find_term(text, entries)):
            return found
    return None


def _shown(ch: str) -> bool:
    if unicodedata.category(ch)[0] == "C":  # Cc, Cf, Cs, Co, Cn
        return False
    code = ord(ch)
    return not any(low <= code <= high for low, high in _IGNORABLE_RANGES)


@lru_cache(maxsize=256)
def _pattern(entries: tuple[str, ...]) -> re.Pattern[str] | None:
    parts = [part for part in map(_entry_pattern, entries) if part]
    return re.compile("|".join(parts)) if parts else None


def _entry_pattern(entry: str) -> str | None:
    """A regex for one entry: whole word (or prefix, for ``word*``), a space allowed between
    any two of its characters."""
    word = filter_form(entry)
    prefix = word.endswith("*")
    chars = [c for c in word.rstrip("*") if c != " "]
    if not chars:
        return None
    body = " ?".join(re.escape(c) for c in chars)
    ending = r"\w*" if prefix else r"(?!\w)"
    return rf"(?<!\w){body}{ending}"
