"""Discord-side validation the fake emulates (a useful subset of what the real API rejects).

Message and command problems are reported the way Discord does: HTTP 400 with
``{"code": 50035, "message": "Invalid Form Body", "errors": {...}}`` (nested ``_errors`` lists),
so discord.py raises ``HTTPException`` / ``CommandSyncFailure`` exactly as in production.

Interaction *building* problems (things Discord's client UI would never let a user send, such as
an out-of-range integer or a missing required option) raise :class:`InvalidInteraction` in the
test instead.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

COMPONENTS_V2_FLAG = 1 << 15
MAX_CONTENT = 2000
MAX_EMBEDS = 10
MAX_ATTACHMENTS = 10
CHAT_INPUT_NAME = re.compile(r"^[-_'\w\u0900-\u097F\u0E00-\u0E7F]{1,32}$")


class InvalidInteraction(ValueError):
    """Raised by the interaction builders for input Discord's client would refuse to send."""


def _err(code: str, message: str) -> dict[str, Any]:
    return {"_errors": [{"code": code, "message": message}]}


def _set(tree: dict[str, Any], path: list[str], code: str, message: str) -> None:
    node = tree
    for key in path[:-1]:
        node = node.setdefault(key, {})
    leaf = node.setdefault(path[-1], {"_errors": []})
    leaf.setdefault("_errors", []).append({"code": code, "message": message})


def form_error(errors: dict[str, Any]) -> dict[str, Any]:
    return {"code": 50035, "errors": errors, "message": "Invalid Form Body"}


# --------------------------------------------------------------------------------------------
# Components
# --------------------------------------------------------------------------------------------


def walk_components(components: Any) -> Iterator[dict[str, Any]]:
    """Depth-first walk over a component tree (action rows, sections, containers, labels...)."""
    if isinstance(components, list):
        for c in components:
            yield from walk_components(c)
    elif isinstance(components, dict):
        yield components
        for key in ("components", "accessory", "component"):
            if key in components:
                yield from walk_components(components[key])


def find_component(components: Any, custom_id: str) -> dict[str, Any] | None:
    for c in walk_components(components):
        if c.get("custom_id") == custom_id:
            return c
    return None


def _validate_components(components: Any, flags: int, errors: dict[str, Any], base: list[str]):
    if not isinstance(components, list):
        return
    seen: set[str] = set()
    for c in walk_components(components):
        cid = c.get("custom_id")
        if cid is not None:
            if len(cid) > 100:
                _set(errors, [*base, "components"], "BASE_TYPE_MAX_LENGTH", "custom_id too long")
            if cid in seen:
                _set(
                    errors,
                    [*base, "components"],
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    f"Component custom id cannot be duplicated: {cid}",
                )
            seen.add(cid)
        label = c.get("label")
        if c.get("type") == 2 and label is not None and len(label) > 80:
            _set(errors, [*base, "components"], "BASE_TYPE_MAX_LENGTH", "label too long")
        if c.get("type") == 2 and c.get("style") not in (5, 6) and not cid:
            _set(errors, [*base, "components"], "BASE_TYPE_REQUIRED", "Button needs custom_id")
        if c.get("type") in (3, 5, 6, 7, 8) and len(c.get("options") or []) > 25:
            _set(errors, [*base, "components"], "BASE_TYPE_MAX_LENGTH", "Too many select options")
    if flags & COMPONENTS_V2_FLAG:
        if sum(1 for _ in walk_components(components)) > 40:
            _set(errors, [*base, "components"], "BASE_TYPE_MAX_LENGTH", "Too many components")
        return
    if len(components) > 5:
        _set(errors, [*base, "components"], "BASE_TYPE_MAX_LENGTH", "Must be 5 or fewer in length.")
    for i, row in enumerate(components):
        path = [*base, "components", str(i)]
        if row.get("type") != 1:
            _set(errors, path, "UNION_TYPE_CHOICES", "Top-level components must be action rows")
            continue
        children = row.get("components") or []
        if not children or len(children) > 5:
            _set(errors, [*path, "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5")
        if any(ch.get("type") != 2 for ch in children) and len(children) > 1:
            _set(errors, [*path, "components"], "COMPONENT_LAYOUT_WIDTH_EXCEEDED", "Row too wide")


def validate_message(
    payload: dict[str, Any] | None,
    files: list[Any],
    *,
    creating: bool,
    upload_limit: int,
    base: list[str] | None = None,
) -> tuple[int, dict[str, Any]] | None:
    """Return ``(status, error_body)`` if Discord would reject this message payload."""
    payload = payload or {}
    base = base or []
    for f in files:
        if len(f.data) > upload_limit:
            return 413, {"code": 40005, "message": "Request entity too large"}
    errors: dict[str, Any] = {}
    flags = int(payload.get("flags") or 0)
    content = payload.get("content")
    if isinstance(content, str) and len(content) > MAX_CONTENT:
        _set(
            errors,
            [*base, "content"],
            "BASE_TYPE_MAX_LENGTH",
            f"Must be {MAX_CONTENT} or fewer in length.",
        )
    embeds = payload.get("embeds") or []
    if len(embeds) > MAX_EMBEDS:
        _set(errors, [*base, "embeds"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer in length.")
    for i, e in enumerate(embeds):
        if len(e.get("title") or "") > 256:
            _set(errors, [*base, "embeds", str(i), "title"], "BASE_TYPE_MAX_LENGTH", "max 256")
        if len(e.get("description") or "") > 4096:
            _set(
                errors, [*base, "embeds", str(i), "description"], "BASE_TYPE_MAX_LENGTH", "max 4096"
            )
        if len(e.get("fields") or []) > 25:
            _set(errors, [*base, "embeds", str(i), "fields"], "BASE_TYPE_MAX_LENGTH", "max 25")
    if flags & COMPONENTS_V2_FLAG and (content or embeds):
        _set(
            errors,
            [*base, "content" if content else "embeds"],
            "MESSAGE_CANNOT_USE_LEGACY_FIELDS_WITH_COMPONENTS_V2",
            "The 'content' and 'embeds' fields cannot be used when using "
            "MessageFlags.IS_COMPONENTS_V2",
        )
    if "components" in payload:
        _validate_components(payload.get("components"), flags, errors, base)
    attachments = payload.get("attachments")
    if attachments is not None and len(attachments) > MAX_ATTACHMENTS:
        _set(errors, [*base, "attachments"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")
    if len(files) > MAX_ATTACHMENTS:
        _set(errors, [*base, "files"], "BASE_TYPE_MAX_LENGTH", "Must be 10 or fewer.")
    if errors:
        return 400, form_error(errors)
    if creating:
        has_content = isinstance(content, str) and content.strip() != ""
        if not (
            has_content
            or embeds
            or files
            or payload.get("components")
            or payload.get("poll")
            or payload.get("sticker_ids")
        ):
            return 400, {"code": 50006, "message": "Cannot send an empty message"}
    return None


def validate_modal(data: dict[str, Any]) -> tuple[int, dict[str, Any]] | None:
    errors: dict[str, Any] = {}
    if not data.get("custom_id") or len(data.get("custom_id", "")) > 100:
        _set(errors, ["data", "custom_id"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100")
    title = data.get("title") or ""
    if not 1 <= len(title) <= 45:
        _set(errors, ["data", "title"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 45")
    comps = data.get("components") or []
    if not 1 <= len(comps) <= 5:
        _set(errors, ["data", "components"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 5")
    if errors:
        return 400, form_error(errors)
    return None


# --------------------------------------------------------------------------------------------
# Application commands (sync)
# --------------------------------------------------------------------------------------------


def _check_name(name: Any, cmd_type: int, errors: dict[str, Any], path: list[str]) -> None:
    if not isinstance(name, str) or not 1 <= len(name) <= 32:
        _set(errors, [*path, "name"], "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 32 in length.")
        return
    if cmd_type == 1 and (not CHAT_INPUT_NAME.match(name) or name != name.lower()):
        _set(
            errors,
            [*path, "name"],
            "APPLICATION_COMMAND_INVALID_NAME",
            f"Command name is invalid: {name!r}",
        )


def _check_description(desc: Any, errors: dict[str, Any], path: list[str]) -> None:
    if not isinstance(desc, str) or not 1 <= len(desc) <= 100:
        _set(
            errors,
            [*path, "description"],
            "BASE_TYPE_BAD_LENGTH",
            "Must be between 1 and 100 in length.",
        )


def _check_options(options: list[dict[str, Any]], errors: dict[str, Any], path: list[str]):
    if len(options) > 25:
        _set(errors, [*path, "options"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
    seen_optional = False
    names: set[str] = set()
    for i, opt in enumerate(options):
        p = [*path, "options", str(i)]
        _check_name(opt.get("name"), 1, errors, p)
        _check_description(opt.get("description"), errors, p)
        if opt.get("name") in names:
            _set(
                errors,
                [*p, "name"],
                "APPLICATION_COMMAND_OPTIONS_NAME_ALREADY_EXISTS",
                "Option names must be unique",
            )
        names.add(opt.get("name"))
        otype = opt.get("type")
        if otype in (1, 2):
            _check_options(opt.get("options") or [], errors, p)
            continue
        if opt.get("required"):
            if seen_optional:
                _set(
                    errors,
                    [*p, "required"],
                    "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                    "Required options must be placed before non-required options",
                )
        else:
            seen_optional = True
        choices = opt.get("choices") or []
        if len(choices) > 25:
            _set(errors, [*p, "choices"], "BASE_TYPE_MAX_LENGTH", "Must be 25 or fewer in length.")
        if choices and opt.get("autocomplete"):
            _set(
                errors,
                [*p, "autocomplete"],
                "AUTOCOMPLETE_CANNOT_HAVE_CHOICES",
                "Autocomplete cannot be set if choices are present",
            )
        for j, ch in enumerate(choices):
            if not 1 <= len(str(ch.get("name", ""))) <= 100:
                _set(
                    errors,
                    [*p, "choices", str(j), "name"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                )
            if isinstance(ch.get("value"), str) and len(ch["value"]) > 100:
                _set(
                    errors,
                    [*p, "choices", str(j), "value"],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 100 or fewer in length.",
                )


def validate_commands(commands: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Return a 50035 error body if Discord would reject this bulk overwrite."""
    errors: dict[str, Any] = {}
    seen: set[tuple[str, int]] = set()
    counts: dict[int, int] = {}
    for i, cmd in enumerate(commands):
        path = [str(i)]
        ctype = int(cmd.get("type", 1))
        counts[ctype] = counts.get(ctype, 0) + 1
        _check_name(cmd.get("name"), ctype, errors, path)
        if ctype == 1:
            _check_description(cmd.get("description"), errors, path)
            _check_options(cmd.get("options") or [], errors, path)
        elif cmd.get("description"):
            _set(
                errors,
                [*path, "description"],
                "APPLICATION_COMMAND_CONTEXT_MENU_DESCRIPTION",
                "Context menu commands cannot have a description",
            )
        key = (cmd.get("name"), ctype)
        if key in seen:
            _set(
                errors,
                [*path, "name"],
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                f"Application command names must be unique: {cmd.get('name')}",
            )
        seen.add(key)  # type: ignore[arg-type]
    if counts.get(1, 0) > 100 or counts.get(2, 0) > 15 or counts.get(3, 0) > 15:
        errors.setdefault("_errors", []).append(
            {"code": "APPLICATION_COMMANDS_TOO_MANY", "message": "Too many commands"}
        )
    return form_error(errors) if errors else None
