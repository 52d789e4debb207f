"""Styles and per-user preferences, shared by every front end.

A *style* is a prompt template with ``{prompt}`` (plus an optional negative prompt, model and
aspect ratio). The operator defines styles in ``[styles.<name>]``; a community (a Discord
server) adds its own, stored as the settings document of the scope ``styles:<scope>``
(e.g. ``styles:discord:guild:1234``). A community's style never hides an operator's of the
same name. A style's text becomes part of the prompt, so it passes the same normalisation
and filters (``ImageService`` screens every request it runs).

*Preferences* are a user's defaults (model, style, aspect, count, delivery), stored under the
scope ``prefs:<frontend>:<user>``; ``ImageService.personalise`` applies them, and a style,
to the options a user left out.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace
from typing import Any

from .errors import InvalidRequestError
from .types import MAX_PROMPT_CHARS

STYLE_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
MAX_STYLES_PER_SCOPE = 25  # a Discord autocomplete shows 25 choices
MAX_STYLE_TEXT = 500
DELIVERY_MODES = ("public", "private", "dm")
ASPECT_FORM = re.compile(r"^\d{1,2}:\d{1,2}$")


@dataclass(frozen=True)
class Style:
    """One style. ``source``: ``config`` (the operator's) or the scope it was added in."""

    name: str
    prompt: str
    negative_prompt: str | None = None
    model: str | None = None
    aspect: str | None = None
    description: str = ""
    source: str = "config"

    def apply(self, prompt: str, negative: str | None) -> tuple[str, str | None]:
        """The prompt put into the template, and the negative prompts joined."""
        styled = self.prompt.replace("{prompt}", prompt).strip()
        negatives = [n for n in (negative, self.negative_prompt) if n]
        return styled, ", ".join(negatives) or None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("source")
        data.pop("name")
        return {k: v for k, v in data.items() if v not in (None, "")}


def make_style(
    name: str,
    prompt: str,
    *,
    negative_prompt: str | None = None,
    model: str | None = None,
    aspect: str | None = None,
    description: str = "",
    source: str = "config",
) -> Style:
    """A checked style.

    Raises:
        InvalidRequestError: a bad name, a template without ``{prompt}``, text too long or an
            aspect that is not ``W:H``.
    """
    name = name.strip().lower()
    if not STYLE_NAME.fullmatch(name):
        raise InvalidRequestError(
            "a style name is 1-32 lowercase letters, digits, - or _, starting with a letter"
            " or digit"
        )
    if "{prompt}" not in prompt:
        raise InvalidRequestError("a style's prompt template must contain {prompt}")
    for text, what in ((prompt, "prompt template"), (negative_prompt, "negative prompt")):
        if text is not None and len(text) > MAX_STYLE_TEXT:
            raise InvalidRequestError(
                f"a style's {what} can be at most {MAX_STYLE_TEXT} characters"
            )
    if aspect is not None and not ASPECT_FORM.fullmatch(aspect):
        raise InvalidRequestError("a style's aspect must look like 16:9")
    return Style(
        name=name,
        prompt=prompt.strip(),
        negative_prompt=(negative_prompt or "").strip() or None,
        model=(model or "").strip() or None,
        aspect=aspect,
        description=description.strip()[:100],
        source=source,
    )


def styles_from_document(scope: str, document: dict[str, Any]) -> list[Style]:
    """The styles stored for a scope; malformed entries are skipped (a bad row never breaks
    a community)."""
    out = []
    for name, fields in sorted(document.items()):
        if not isinstance(fields, dict):
            continue
        try:
            out.append(
                make_style(
                    name,
                    str(fields.get("prompt", "")),
                    negative_prompt=fields.get("negative_prompt"),
                    model=fields.get("model"),
                    aspect=fields.get("aspect"),
                    description=str(fields.get("description", "")),
                    source=scope,
                )
            )
        except InvalidRequestError:
            continue
    return out


@dataclass(frozen=True)
class Preferences:
    """A user's defaults; None (or 0 for ``count``) = not set."""

    model: str | None = None
    style: str | None = None
    aspect: str | None = None
    count: int = 0
    delivery: str | None = None  # public, private or dm

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preferences:
        """Read a stored document, ignoring anything malformed."""
        count = data.get("count")
        delivery = data.get("delivery")
        return cls(
            model=_text(data.get("model")),
            style=_text(data.get("style")),
            aspect=_text(data.get("aspect")),
            count=count if isinstance(count, int) and 1 <= count <= 10 else 0,
            delivery=delivery if delivery in DELIVERY_MODES else None,
        )

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v not in (None, 0)}

    def changed(self, **changes: Any) -> Preferences:
        """A copy with ``changes``; ``""`` (or 0) clears a field.

        Raises:
            InvalidRequestError: a delivery mode, count or aspect that cannot be used.
        """
        changes = {k: (None if v == "" else v) for k, v in changes.items()}
        delivery = changes.get("delivery")
        if delivery is not None and delivery not in DELIVERY_MODES:
            raise InvalidRequestError(f"delivery must be one of {', '.join(DELIVERY_MODES)}")
        count = changes.get("count")
        if count is not None and not 0 <= count <= 10:
            raise InvalidRequestError("the count must be between 1 and 10 (0 clears it)")
        aspect = changes.get("aspect")
        if aspect is not None and not ASPECT_FORM.fullmatch(aspect):
            raise InvalidRequestError("the aspect must look like 16:9")
        if "count" in changes and changes["count"] is None:
            changes["count"] = 0
        return replace(self, **changes)


def prefs_scope(user_key: str) -> str:
    """The settings scope of a user's preferences (``prefs:discord:123``)."""
    return f"prefs:{user_key}"


def styles_scope(scope: str) -> str:
    """The settings scope holding a community's styles (``styles:discord:guild:1``)."""
    return f"styles:{scope}"


def _text(value: Any) -> str | None:
    return str(value)[:MAX_PROMPT_CHARS] if isinstance(value, str) and value.strip() else None
