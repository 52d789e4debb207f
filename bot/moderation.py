"""A Discord server's prompt rules, checked before anything is spent: its banned words and
NSFW policy.

Pure functions, no Discord and no I/O. The matching is the core's (``core.find_term``): on
the text exactly as the provider will receive it (NFKC, invisible characters removed,
whitespace folded), case-insensitive, whole words; ``word*`` matches any word starting with
it. Every text that reaches a provider is checked: the prompt and the negative prompt.
"""

from __future__ import annotations

from core import NSFW_TERMS, find_in_texts

__all__ = ["NSFW_TERMS", "check_prompt"]


def check_prompt(
    *texts: str | None,
    banned: tuple[str, ...],
    nsfw_policy: str,
    age_restricted: bool,
) -> str | None:
    """Why these texts are refused here (a user-facing sentence), or None when they may run.

    The server's banned words apply everywhere in the server. NSFW terms are refused outside
    age-restricted channels (policy ``age_restricted``; a DM is never one), everywhere
    (``strict``), or not checked (``off``).
    """
    word = find_in_texts(texts, banned)
    if word:
        return f"This server does not allow “{word}” in prompts. Nothing was charged."
    if nsfw_policy == "off" or (nsfw_policy == "age_restricted" and age_restricted):
        return None
    word = find_in_texts(texts, NSFW_TERMS)
    if word:
        where = "on this server" if nsfw_policy == "strict" else "outside age-restricted channels"
        return (
            f"This prompt looks NSFW (“{word}”), which is not allowed {where}. Nothing was charged."
        )
    return None
