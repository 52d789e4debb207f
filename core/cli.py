"""``imagegate``: the operators' command line. Thin: parse, call ``ImageService``, print.

Exit 0 on success; on failure one line on stderr and a non-zero exit (with ``--json`` also
``{"error": {"code", "message"}}`` on stdout). Log lines go to stderr only with ``-v``.
The ``serve``, ``mcp`` and ``bot`` commands hand over to the front ends by name, so ``core``
itself never imports ``discord`` or ``mcp``.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import re
import sys
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from .db import Database, open_database
from .dbcopy import copy_sqlite
from .errors import ImageGateError, InvalidRequestError, ProviderError
from .reports import digest_text
from .service import ImageService, default_cli_user
from .settings import Settings, load_settings
from .store import copy_out
from .types import EDIT_MODES, Caller, ImageRequest, ImageResult, parse_size

# Front ends, loaded by name only when asked for (``module:function(settings, args)``).
FRONTENDS = {
    "serve": "mcp_server.serve:serve_all",
    "mcp": "mcp_server.serve:run_mcp",
    "bot": "bot.__main__:run_bot",
}


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``imagegate`` console script."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.CRITICAL + 1,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    as_json = getattr(args, "json", False)
    try:
        settings = load_settings(args.config)
        return args.handler(settings, args) or 0
    except ImageGateError as exc:
        return _fail(_for_operator(exc), as_json)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # a bug: say so in one line; the traceback only with -v
        logging.getLogger("imagegate").exception("unexpected error")
        return _fail(
            {"code": "internal_error", "message": f"internal error ({type(exc).__name__})"}, as_json
        )


def _for_operator(exc: ImageGateError) -> dict[str, Any]:
    """The error as the CLI reports it: the operator also sees which address failed."""
    error = exc.as_dict()
    if isinstance(exc, ProviderError) and exc.url:
        error["message"] = f"{exc.message} (at {exc.url})"
    return error


def _fail(error: dict[str, Any], as_json: bool) -> int:
    print(f"imagegate: {error['message']}", file=sys.stderr)
    if as_json:
        print(json.dumps({"error": error}))
    return 1


HELP = """\
Generate and edit images through the configured providers, share credits fairly between
users, and run the Discord bot and the MCP server. With no config file, imagegate runs offline
with the placeholder provider (no keys needed)."""

EXAMPLES = """\
examples:
  imagegate generate "a red fox in the snow" -n 2 --seed 7
  imagegate generate "a lighthouse" --model nebulablock:black-forest-labs/FLUX.1-schnell --json
  imagegate edit photo.png --mode inpaint --mask mask.png --prompt "a straw hat"
  imagegate models                         the model references --model accepts
  imagegate quota show cli:$(whoami)       credits left
  imagegate quota grant discord:1234 50 --reason "event prize"
  imagegate quota history discord:1234     the audit trail
  imagegate mcp token alice                a bearer token for an MCP client
  imagegate serve                          MCP over HTTP, plus the bot if DISCORD_TOKEN is set

config: --config PATH, else $IMAGEGATE_CONFIG, else ./config.toml, else built-in defaults;
every key is in config.example.toml. 'imagegate COMMAND --help' shows a command's options."""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="imagegate",
        description=HELP,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", metavar="PATH", help="TOML config file (see below)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log to stderr")
    sub = parser.add_subparsers(dest="command", required=True, title="commands", metavar="COMMAND")

    _image_job_parsers(sub)

    models = sub.add_parser("models", help="list the configured models and their prices")
    _json_flag(models)
    models.set_defaults(handler=_async(_models, check_default=False))

    providers = sub.add_parser("providers", help="list configured providers")
    _json_flag(providers)
    providers.add_argument("--balance", action="store_true", help="ask each one: balance, models")
    providers.set_defaults(handler=_async(_providers))

    _quota_parsers(sub)

    job = sub.add_parser("job", help="look at a stored job").add_subparsers(
        dest="job_cmd", required=True
    )
    show = job.add_parser("show", help="a job and its images")
    show.add_argument("job_id")
    show.add_argument("--user", help="whose job (default: you; admins see all)")
    _json_flag(show)
    show.set_defaults(handler=_async(_job_show))

    _db_parsers(sub)

    serve = sub.add_parser(
        "serve", help="run everything configured (MCP over HTTP, bot, callbacks)"
    )
    serve.set_defaults(handler=_frontend("serve"))
    mcp = sub.add_parser("mcp", help="run the MCP server, or mint a client token")
    mcp.add_argument("--transport", choices=("stdio", "http"), default="stdio")
    mcp.set_defaults(handler=_frontend("mcp"))
    mcp_sub = mcp.add_subparsers(dest="mcp_cmd")
    token = mcp_sub.add_parser(
        "token",
        help="mint a bearer token for USER (printed once; works at once, no restart)",
    )
    token.add_argument("user", nargs="?", help="alice (as mcp:alice), or any frontend:id")
    token.add_argument("--label", default="", help="a note shown in the token list")
    token.add_argument("--revoke", metavar="PREFIX", help="revoke the token with this prefix")
    _json_flag(token)
    token.set_defaults(handler=_async(_mcp_token))
    tokens = mcp_sub.add_parser(
        "tokens", help="list MCP client tokens: prefix, user, created, last used"
    )
    tokens.add_argument("--all", action="store_true", help="include revoked tokens")
    _json_flag(tokens)
    tokens.set_defaults(handler=_async(_mcp_tokens))
    _admin_parsers(sub)
    report = sub.add_parser("report", help="usage digest: credits, jobs, failures, runways")
    report.add_argument("--days", type=int, default=7, help="UTC days, today included (1-366)")
    _json_flag(report)
    report.set_defaults(handler=_async(_report))
    bot = sub.add_parser("bot", help="run the Discord bot")
    bot.set_defaults(handler=_frontend("bot"))
    return parser


def _quota_parsers(sub: Any) -> None:
    quota = sub.add_parser(
        "quota", help="users' credits: show, grant, allowance, history"
    ).add_subparsers(dest="quota_cmd", required=True)
    show = quota.add_parser("show", help="a user's credits")
    show.add_argument("user")
    _json_flag(show)
    show.set_defaults(handler=_async(_quota_show))
    grant = quota.add_parser("grant", help="grant credits that never expire (negative: take back)")
    grant.add_argument("user")
    grant.add_argument("credits", type=int)
    grant.add_argument("--reason", default="")
    _json_flag(grant)
    grant.set_defaults(handler=_async(_quota_grant))
    allowance = quota.add_parser("allowance", help="set a user's per-period allowance")
    allowance.add_argument("user")
    allowance.add_argument("allowance", help="credits per period, or 'default'")
    _json_flag(allowance)
    allowance.set_defaults(handler=_async(_quota_allowance))
    history = quota.add_parser("history", help="a user's ledger, newest first")
    history.add_argument("user")
    history.add_argument("--limit", type=int, default=50)
    _json_flag(history)
    history.set_defaults(handler=_async(_quota_history))


def _admin_parsers(sub: Any) -> None:
    admin = sub.add_parser("admin", help="dashboard sign-in tokens").add_subparsers(
        dest="admin_cmd", required=True
    )
    token = admin.add_parser(
        "token", help="mint a dashboard token (printed once, alone on its first line)"
    )
    token.add_argument("user", nargs="?", help="who it is for (default: cli:<login>)")
    token.add_argument("--label", default="", help="a note shown in the token list")
    token.add_argument("--revoke", metavar="PREFIX", help="revoke the token with this prefix")
    _json_flag(token)
    token.set_defaults(handler=_async(_admin_token))
    tokens = admin.add_parser("tokens", help="list dashboard tokens (never the tokens themselves)")
    tokens.add_argument("--all", action="store_true", help="include revoked tokens")
    _json_flag(tokens)
    tokens.set_defaults(handler=_async(_admin_tokens))


def _db_parsers(sub: Any) -> None:
    db = sub.add_parser("db", help="the database: schema migrations").add_subparsers(
        dest="db_cmd", required=True
    )
    status = db.add_parser("status", help="which backend, and each migration: applied or pending")
    _json_flag(status)
    status.set_defaults(handler=_with_database(_db_status))
    upgrade = db.add_parser("upgrade", help="apply the pending migrations")
    _json_flag(upgrade)
    upgrade.set_defaults(handler=_with_database(_db_upgrade))
    copy = db.add_parser(
        "copy", help="copy a SQLite database into the configured, empty PostgreSQL database"
    )
    copy.add_argument("sqlite_path", type=Path, metavar="SQLITE_PATH")
    _json_flag(copy)
    copy.set_defaults(handler=_with_database(_db_copy, migrate=True))


def _image_job_parsers(sub: Any) -> None:
    """generate, edit and upscale."""
    gen = _job_parser(sub, "generate", "make images from a text prompt", _generate)
    gen.add_argument("prompt")
    gen.add_argument("-n", type=int, default=None, help="number of images (1-10)")
    gen.add_argument("--negative", help="what to leave out")
    shape = gen.add_mutually_exclusive_group()
    shape.add_argument("--size", help="WxH, e.g. 1024x768")
    shape.add_argument("--aspect", help="W:H, e.g. 16:9")
    gen.add_argument("--seed", type=int)
    _tune_flags(gen)

    edit = _job_parser(sub, "edit", "change an image (variation, inpaint, ...)", _edit)
    edit.add_argument("image", help="a file, an image id or imagegate://images/{id}")
    edit.add_argument("--prompt", default="")
    edit.add_argument("--mode", required=True, choices=EDIT_MODES)
    edit.add_argument(
        "--mask", help="white = repaint, black = keep (a file, image id or imagegate:// URI)"
    )
    edit.add_argument("--strength", type=float)
    edit.add_argument("--seed", type=int)
    _tune_flags(edit)

    up = _job_parser(sub, "upscale", "upscale an image", _upscale)
    up.add_argument("image", help="a file, an image id or imagegate://images/{id}")
    up.add_argument("--scale", type=int, choices=(2, 3, 4))
    up.add_argument("--prompt", default="", help="guides a prompted upscale (where supported)")


def _job_parser(sub: Any, name: str, help_text: str, handler: Callable) -> argparse.ArgumentParser:
    parser = sub.add_parser(name, help=help_text)
    parser.add_argument("--model", help="provider:model or an alias")
    parser.add_argument("--user", help="frontend:id (default cli:<login>)")
    parser.add_argument("--out", type=Path, help="write the images into this folder")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option of the model (see 'models --json'); repeatable",
    )
    _json_flag(parser)
    parser.set_defaults(handler=_async(handler))
    return parser


def _tune_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--steps", type=int, help="sampling steps, where the model uses them")
    parser.add_argument("--guidance", type=float, help="CFG scale, where the model uses it")


def _options(args: argparse.Namespace) -> dict[str, Any]:
    """``--option KEY=VALUE`` pairs; a VALUE that reads as JSON (true, 3, 0.5, ["a"]) is
    taken as that, anything else as text.

    Raises:
        InvalidRequestError: an option without ``=`` or given twice.
    """
    options: dict[str, Any] = {}
    for text in args.option:
        key, sep, value = text.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidRequestError(f"--option takes KEY=VALUE, not {text!r}")
        if key in options:
            raise InvalidRequestError(f"--option {key} is given twice")
        try:
            options[key] = json.loads(value)
        except ValueError:
            options[key] = value
    return options


def _json_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object")


Handler = Callable[[ImageService, argparse.Namespace], Awaitable[int | None]]


def _async(
    handler: Handler, *, check_default: bool = True
) -> Callable[[Settings, argparse.Namespace], int | None]:
    def run(settings: Settings, args: argparse.Namespace) -> int | None:
        async def go() -> int | None:
            service = await ImageService.open(settings, sweeper=False, check_default=check_default)
            async with service:
                return await handler(service, args)

        return asyncio.run(go())

    return run


DatabaseHandler = Callable[[Database, Settings, argparse.Namespace], Awaitable[int | None]]


def _with_database(
    handler: DatabaseHandler, *, migrate: bool = False
) -> Callable[[Settings, argparse.Namespace], int | None]:
    """Run ``handler`` on the configured database, opened as it is (or, with ``migrate``,
    brought up to date first)."""

    def run(settings: Settings, args: argparse.Namespace) -> int | None:
        async def go() -> int | None:
            db = await open_database(settings.database, migrate=migrate)
            try:
                return await handler(db, settings, args)
            finally:
                await db.close()

        return asyncio.run(go())

    return run


def _frontend(name: str) -> Callable[[Settings, argparse.Namespace], int | None]:
    def run(settings: Settings, args: argparse.Namespace) -> int | None:
        module, _, function = FRONTENDS[name].partition(":")
        return getattr(importlib.import_module(module), function)(settings, args)

    return run


def _caller(args: argparse.Namespace) -> Caller:
    return Caller.parse(args.user or default_cli_user())


def _admin() -> Caller:
    """The operator at the terminal: the CLI is the admin tool."""
    return Caller.parse(default_cli_user(), is_admin=True)


# --- jobs -----------------------------------------------------------------------------------


async def _generate(service: ImageService, args: argparse.Namespace) -> None:
    request = _request(
        args,
        _options(args),
        operation="generate",
        negative_prompt=args.negative,
        n=service.settings.defaults.n if args.n is None else args.n,
        size=parse_size(args.size),
        aspect_ratio=args.aspect,
    )
    result = await service.generate(_caller(args), request, idempotency_key=_key())
    _print_result(result, args)


async def _edit(service: ImageService, args: argparse.Namespace) -> None:
    caller, options = _caller(args), _options(args)
    image = await service.input_from(caller, args.image, _read, what=f"image {args.image}")
    mask = None
    if args.mask:
        mask = await service.input_from(caller, args.mask, _read, what=f"mask {args.mask}")
    request = _request(args, options, operation=args.mode, image=image, mask=mask)
    result = await service.edit(caller, request, idempotency_key=_key())
    _print_result(result, args)


async def _upscale(service: ImageService, args: argparse.Namespace) -> None:
    caller, options = _caller(args), _options(args)
    image = await service.input_from(caller, args.image, _read, what=f"image {args.image}")
    request = _request(args, options, operation="upscale", image=image)
    result = await service.upscale(caller, request, idempotency_key=_key())
    _print_result(result, args)


# The flags of the job commands that carry a request field's own name.
_REQUEST_FLAGS = ("prompt", "seed", "steps", "guidance", "strength", "scale", "model")


def _request(args: argparse.Namespace, options: dict[str, Any], **fields: Any) -> ImageRequest:
    """A job command's request: ``fields`` plus the ``_REQUEST_FLAGS`` it has (a flag the
    command lacks, or left out, is not given).

    Raises:
        InvalidRequestError: as ``ImageRequest.checked``.
    """
    flags = {name: getattr(args, name, None) for name in _REQUEST_FLAGS}
    return ImageRequest.checked(**flags, options=options, **fields)


def _read(path: str) -> bytes:
    """A file's bytes; FileNotFoundError passes (the name may be an image id instead)."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise InvalidRequestError(f"cannot read {path}: {exc.strerror}") from None


def _key() -> str:
    return f"cli:{uuid.uuid4().hex}"


def _print_result(result: ImageResult, args: argparse.Namespace) -> None:
    paths = [copy_out(i, args.out) if args.out else i.path.resolve() for i in result.images]
    if args.json:
        print(
            json.dumps(
                {
                    "job_id": result.job_id,
                    "images": [
                        {
                            "id": image.id,
                            "path": str(path),
                            "mime": image.mime,
                            "width": image.width,
                            "height": image.height,
                            "seed": image.seed,
                        }
                        for path, image in zip(paths, result.images, strict=True)
                    ],
                    "model": result.model,
                    "credits_charged": result.credits_charged,
                    "credits_remaining": result.credits_remaining,
                    "warnings": result.warnings,
                }
            )
        )
        return
    for path, image in zip(paths, result.images, strict=True):
        print(f"{path}  ({_shape(image.width, image.height, image.seed)})")
    print(
        f"job {result.job_id} on {result.model}: {result.credits_charged} credit(s) charged,"
        f" {result.credits_remaining} left"
    )
    for warning in result.warnings:
        print(f"warning: {warning}")


def _shape(width: int, height: int, seed: int | None) -> str:
    """``1024x768, seed 7``; no seed where the provider reports none."""
    return f"{width}x{height}" + ("" if seed is None else f", seed {seed}")


# --- lookups --------------------------------------------------------------------------------


async def _models(service: ImageService, args: argparse.Namespace) -> int:
    """List the models, even when ``[defaults] model`` names none of them (the line on stderr
    and the exit status then say so): that list is how to find the right name."""
    _list_models(service, args)
    if service.config_problem is not None:
        print(f"imagegate: {service.config_problem.message}", file=sys.stderr)
        return 1
    return 0


def _list_models(service: ImageService, args: argparse.Namespace) -> None:
    models = service.models()
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "ref": m.ref,
                        "provider": m.provider,
                        "kind": m.kind,
                        "operations": m.operations,
                        "max_images": m.max_images,
                        "price": m.price,
                        "prices": m.prices,
                        "aliases": m.aliases,
                        "options": m.options,
                    }
                    for m in models
                ]
            )
        )
        return
    for m in models:
        aliases = f"  (alias: {', '.join(m.aliases)})" if m.aliases else ""
        options = f"  options: {', '.join(m.options)}" if m.options else ""
        print(
            f"{m.ref}  [{m.kind}]  {', '.join(m.operations)}  up to {m.max_images}/call,"
            f" {m.price} credit(s)/image{aliases}{options}"
        )


async def _providers(service: ImageService, args: argparse.Namespace) -> None:
    providers = await service.providers(balance=args.balance)
    if args.json:
        print(json.dumps([p.__dict__ for p in providers]))
        return
    for p in providers:
        optional = p.kind == "placeholder" or (p.key_optional and not p.api_key_env)
        key = "not needed" if optional else ("set" if p.key_set else "NOT SET")
        line = (
            f"{p.name}  [{p.kind}]  {p.base_url or '(offline)'}  key {p.api_key_env or '-'}: {key}"
        )
        if p.balance is not None:
            line += f"  balance: {p.balance}"
        if p.available is not None:
            shown = ", ".join(p.available[:12]) + (", ..." if len(p.available) > 12 else "")
            line += f"  serves: {shown or 'nothing now'}"
        print(line)


async def _job_show(service: ImageService, args: argparse.Namespace) -> None:
    caller = Caller.parse(args.user) if args.user else _admin()
    job = await service.job(caller, args.job_id)
    if args.json:
        print(job.model_dump_json())
        return
    print(
        f"job {job.job_id}: {job.operation} on {job.model} by {job.user}, {job.status},"
        f" {job.credits_charged} credit(s)"
    )
    for image in job.images:
        if image.lost:
            print(f"  image {image.index + 1} LOST: {image.lost}; it is not served ({image.uri})")
        else:
            print(f"  {image.path}  {_shape(image.width, image.height, image.seed)} ({image.uri})")
    if job.error:
        print(f"  error: {job.error}")


# --- quotas ---------------------------------------------------------------------------------


async def _quota_show(service: ImageService, args: argparse.Namespace) -> None:
    _print_quota(await service.quota(Caller.parse(args.user)), args.json)


async def _quota_grant(service: ImageService, args: argparse.Namespace) -> None:
    status = await service.grant(
        _admin(), Caller.parse(args.user), args.credits, reason=args.reason
    )
    _print_quota(status, args.json)


async def _quota_allowance(service: ImageService, args: argparse.Namespace) -> None:
    value = None if args.allowance == "default" else _int(args.allowance, "allowance")
    status = await service.set_allowance(_admin(), Caller.parse(args.user), value)
    _print_quota(status, args.json)


async def _quota_history(service: ImageService, args: argparse.Namespace) -> None:
    entries = await service.history(_admin(), Caller.parse(args.user), limit=args.limit)
    if args.json:
        print(json.dumps([json.loads(e.model_dump_json()) for e in entries]))
        return
    for e in entries:
        by = f"  (by {e.actor})" if e.actor else ""
        debt = f"  debt {e.d_debt:+d}" if e.d_debt else ""
        print(
            f"{e.created_at:%Y-%m-%d %H:%M:%S}  {e.kind:11}  allowance_used"
            f" {e.d_allowance_used:+d}  granted {e.d_granted:+d}  held {e.d_held:+d}{debt}"
            f"  {e.reason or ''}{by}"
        )


def _print_quota(status: Any, as_json: bool) -> None:
    if as_json:
        print(status.model_dump_json())
        return
    late = ""
    if status.late_charged or status.debt:
        late = (
            f"; {status.late_charged} charged late this {status.period} (delivered after their"
            f" reservation was released), {status.debt} owed"
        )
    print(
        f"{status.user}: {status.remaining} credit(s) left (allowance {status.allowance} per"
        f" {status.period}, granted {status.granted}, held {status.held},"
        f" {status.in_flight} job(s) running); resets {status.resets_at:%Y-%m-%d %H:%M} UTC"
        f"{late}"
    )


def _int(text: str, what: str) -> int:
    if not re.fullmatch(r"\d{1,9}", text):
        raise InvalidRequestError(f"{what} must be a whole number of credits or 'default'")
    return int(text)


async def _admin_token(service: ImageService, args: argparse.Namespace) -> None:
    await _mint_or_revoke(
        service,
        args,
        "admin",
        args.user or default_cli_user(),
        "dashboard token",
        "Sign in at /admin on the HTTP server",
    )


async def _admin_tokens(service: ImageService, args: argparse.Namespace) -> None:
    await _list_tokens(service, args, "admin")


async def _mcp_token(service: ImageService, args: argparse.Namespace) -> None:
    user = None if args.revoke else _mcp_user(args.user)
    await _mint_or_revoke(
        service,
        args,
        "mcp",
        user,
        "MCP token",
        'Clients send it as "Authorization: Bearer <token>"; it works at once, no restart',
    )


async def _mcp_tokens(service: ImageService, args: argparse.Namespace) -> None:
    await _list_tokens(service, args, "mcp")


def _mcp_user(text: str | None) -> str:
    """``alice`` is ``mcp:alice`` (the user as quotas and the README show it); any
    ``frontend:id`` names that user's wallet (e.g. ``discord:1234``)."""
    if not text:
        raise InvalidRequestError("name the token's user, e.g. imagegate mcp token alice")
    if ":" not in text:
        text = f"mcp:{text}"
    try:
        return Caller.parse(text).key
    except InvalidRequestError:
        raise InvalidRequestError(
            "the user must be a name such as alice (or mcp:alice, discord:1234): no spaces,"
            " no other ':'"
        ) from None


async def _mint_or_revoke(
    service: ImageService,
    args: argparse.Namespace,
    kind: str,
    user: str | None,
    what: str,
    how: str,
) -> None:
    """``imagegate admin|mcp token``: print a new token alone on the first line (shown only
    once, stored as a hash), or revoke one with ``--revoke PREFIX``."""
    if args.revoke:
        info = await service.revoke_token(_admin(), kind, args.revoke)
        if args.json:
            print(json.dumps(_token_json(info)))
        else:
            print(f"revoked {info.shown} ({info.user})")
        return
    assert user is not None
    token, info = await service.mint_token(_admin(), kind, user, label=args.label)
    if args.json:
        print(json.dumps({"token": token, **_token_json(info)}))
        return
    print(token)
    print(f"# {what} {info.shown} for {info.user}: shown only once, stored as a hash.")
    print(f"# {how}; revoke with: imagegate {args.command} token --revoke {info.prefix}")


async def _list_tokens(service: ImageService, args: argparse.Namespace, kind: str) -> None:
    """``imagegate admin|mcp tokens``: one line per token, never the token itself."""
    infos = await service.list_tokens(_admin(), kind, include_revoked=args.all)
    if args.json:
        print(json.dumps([_token_json(i) for i in infos]))
        return
    if not infos:
        print(f"no {kind} tokens (mint one with: imagegate {args.command} token USER)")
    for i in infos:
        used = f"{i.last_used_at:%Y-%m-%d %H:%M}" if i.last_used_at else "never"
        state = "" if i.active else f"  revoked {i.revoked_at:%Y-%m-%d %H:%M}"
        print(
            f"{i.shown}  {i.user}  created {i.created_at:%Y-%m-%d %H:%M}  used {used}"
            f"{state}  {i.label}"
        )


async def _report(service: ImageService, args: argparse.Namespace) -> None:
    digest = await service.digest(_admin(), days=args.days)
    print(digest.model_dump_json() if args.json else digest_text(digest))


def _token_json(info: Any) -> dict[str, Any]:
    def stamp(value: Any) -> str | None:
        return value.isoformat() if value else None

    return {
        "prefix": info.prefix,
        "kind": info.kind,
        "user": info.user,
        "label": info.label,
        "created_at": stamp(info.created_at),
        "last_used_at": stamp(info.last_used_at),
        "revoked_at": stamp(info.revoked_at),
    }


# --- database -------------------------------------------------------------------------------


def _where(db: Database, settings: Settings) -> str:
    """Which database, in words (the URL itself may hold a password: only its variable)."""
    if db.dialect == "postgresql":
        return f"PostgreSQL (${settings.database.url_env})"
    return f"SQLite ({settings.database.path})"


async def _db_status(db: Database, settings: Settings, args: argparse.Namespace) -> None:
    states = await db.migration_status()
    pending = [m.name for m in states if m.applied_at is None]
    if args.json:
        migrations = [{"name": m.name, "applied_at": m.applied_at} for m in states]
        print(
            json.dumps(
                {
                    "backend": db.dialect,
                    "database": _where(db, settings),
                    "migrations": migrations,
                    "pending": pending,
                }
            )
        )
        return
    print(f"database: {_where(db, settings)}")
    for m in states:
        print(f"  {m.name:32} {'applied ' + m.applied_at if m.applied_at else 'PENDING'}")
    print(f"{len(pending)} pending" + (": run `imagegate db upgrade`" if pending else ""))


async def _db_upgrade(db: Database, settings: Settings, args: argparse.Namespace) -> None:
    applied = await db.upgrade()
    if args.json:
        print(json.dumps({"backend": db.dialect, "applied": applied}))
        return
    where = _where(db, settings)
    print(f"{where}: applied {', '.join(applied)}" if applied else f"{where}: up to date")


async def _db_copy(db: Database, settings: Settings, args: argparse.Namespace) -> None:
    report = await copy_sqlite(args.sqlite_path, db)
    if args.json:
        print(json.dumps({"copied": report.rows, "accounts_checked": report.accounts}))
        return
    if report.migrated_source:
        print(
            f"{args.sqlite_path}: schema brought up to date ({', '.join(report.migrated_source)})"
        )
    for table, count in report.rows.items():
        print(f"  {table:16} {count} row(s)")
    print(
        f"copied into {_where(db, settings)}; {report.accounts} account(s) checked: every"
        " balance and ledger sum matches the SQLite file"
    )


if __name__ == "__main__":
    sys.exit(main())
