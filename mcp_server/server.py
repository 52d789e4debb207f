"""The MCP server: eight tools, the ``imagegate://images/{id}`` resources, and a lifespan that
opens ``ImageService``.

Tools stay thin: check the input, build ``Caller`` and ``ImageRequest``, start one service call,
render. The image tools do the first two in a resolver (``_prepare``, through the SDK's
dependency injection), so that a second resolver can ask the user to approve a larger spend
(``consent``) about a request already known to be valid, before anything is spent; each is
declared by its own parameters and description (``_image_tool``).

Who calls: over stdio (and over HTTP with no clients configured) the ``[mcp] stdio_user``; over
HTTP with clients configured, the user whose bearer token came with the request.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import inspect
import logging
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any, Literal, cast

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
from mcp.server.auth.provider import AccessToken
from mcp.server.context import ServerRequestContext
from mcp.server.lowlevel.helper_types import ReadResourceContents
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceNotFoundError, ToolError
from mcp.server.mcpserver.resolve import Elicit, Resolve
from mcp.shared.exceptions import MCPError
from mcp.types import (
    INVALID_PARAMS,
    CallToolResult,
    InputRequiredResult,
    ListResourcesResult,
    PaginatedRequestParams,
    Tool,
    ToolAnnotations,
)
from mcp.types.version import HANDSHAKE_PROTOCOL_VERSIONS
from pydantic import BaseModel, Field, ValidationError

from core import (
    FORMAT_NAMES,
    IMAGE_URI_PREFIX,
    MAX_IMAGES_PER_JOB,
    MAX_PROMPT_CHARS,
    Caller,
    ConfigError,
    EditMode,
    ImageGateError,
    ImageRequest,
    ImageResult,
    ImageService,
    InvalidRequestError,
    JobCancelledError,
    ModelInfo,
    NotFoundError,
    Operation,
    Progress,
    QuotaStatus,
    Settings,
    parse_size,
    sniff_mime,
)

from .auth import ClientTokenVerifier, auth_settings
from .consent import (
    Budgets,
    Consent,
    SpendApproval,
    Verdict,
    allowed_cost,
    budget_key,
    decide,
)
from .inputs import UrlFetcher, resolve_image
from .jobs import JobTracker, TrackedJob
from .render import (
    CancelOut,
    JobOut,
    JobsOut,
    ReturnImage,
    cancel_result,
    error_result,
    estimate_result,
    image_resource,
    image_result,
    jobs_result,
    record_result,
    running_result,
)

log = logging.getLogger("imagegate.mcp")

SERVER_NAME = "imagegate"
INSTRUCTIONS = (
    "imagegate makes and edits images, paid from your credits. list_models shows models and"
    " prices, get_quota your balance. Image tools return imagegate://images/{id} URIs: read one"
    " as a resource for the full image, or pass it as `image` to edit_image or upscale_image. A"
    ' result with status "running" is collected with get_job (or stopped with cancel_job);'
    " list_jobs finds earlier jobs and images."
)

ServiceMethod = Callable[..., Coroutine[Any, Any, ImageResult]]
# In a tools/call's ``_meta``: the client's name for one call, the same when it sends the call
# again (a retry after a lost answer), so that it is served once (``_idempotency_key``).
IDEMPOTENCY_KEY = "imagegate/idempotencyKey"


@dataclass
class AppState:
    """What the lifespan yields: the service and the per-process helpers around it."""

    service: ImageService
    jobs: JobTracker
    fetcher: UrlFetcher
    stdio_caller: Caller
    require_token: bool
    budgets: Budgets

    @property
    def settings(self) -> Settings:
        return self.service.settings

    def caller(self, ctx: Context) -> Caller | None:
        """The token's user over authenticated HTTP (``mcp:alice``, or ``discord:1234`` for a
        member's own token: their credits), else the configured local user."""
        user = _token_user(ctx)
        if user is not None:
            try:
                return Caller.parse(user)
            except ImageGateError:
                return None
        return None if self.require_token else self.stdio_caller


RESOURCES_PAGE = 50  # images per resources/list page


class ImageGateServer(MCPServer[AppState]):
    """``MCPServer`` that lists its tools with compact schemas and reports each stored image's
    real MIME type when it is read."""

    jobs: JobTracker
    budgets: Budgets
    verifier: ClientTokenVerifier
    require_token: bool
    _listed: list[Tool] | None = None

    async def list_tools(self) -> list[Tool]:
        """The tools with compact schemas (``compact_schema``): every agent pays for the
        tools/list text in its context."""
        if self._listed is None:
            self._listed = [
                tool.model_copy(
                    update={
                        "input_schema": compact_schema(tool.input_schema),
                        "output_schema": tool.output_schema
                        and compact_schema(tool.output_schema, output=True),
                    }
                )
                for tool in await super().list_tools()
            ]
        return self._listed

    async def _handle_list_resources(
        self, ctx: ServerRequestContext[AppState], params: PaginatedRequestParams | None
    ) -> ListResourcesResult:
        """The caller's stored images, newest first, a page at a time (the SDK's own handler
        lists only fixed resources, and knows neither the caller nor the cursor)."""
        app = ctx.lifespan_context
        caller = app.caller(Context(request_context=ctx, mcp_server=self))
        if caller is None:
            return ListResourcesResult(resources=[], ttl_ms=0, cache_scope="private")
        try:
            page = await app.service.images(
                caller, limit=RESOURCES_PAGE, cursor=params.cursor if params else None
            )
        except ImageGateError as exc:
            raise MCPError(INVALID_PARAMS, exc.message) from None
        return ListResourcesResult(
            resources=[image_resource(image) for image in page.images],
            next_cursor=page.next_cursor,
            ttl_ms=0,
            cache_scope="private",  # one user's list: never shared between tokens
        )

    async def read_resource(
        self, uri: Any, context: Context[AppState, Any] | None = None
    ) -> Iterable[ReadResourceContents] | InputRequiredResult:
        contents = await super().read_resource(uri, context)
        if isinstance(contents, InputRequiredResult) or not str(uri).startswith(IMAGE_URI_PREFIX):
            return contents
        return [
            ReadResourceContents(
                content=c.content,
                mime_type=(sniff_mime(c.content) if isinstance(c.content, bytes) else None)
                or c.mime_type,
                meta=c.meta,
            )
            for c in contents
        ]


def compact_schema(schema: dict[str, Any], *, output: bool = False) -> dict[str, Any]:
    """``schema`` in fewer characters, meaning the same to a validator: no ``title`` keywords,
    no ``"default": null``, and ``anyOf: [{"type": T, ...}, {"type": "null"}]`` written as
    ``"type": [T, "null"]`` (an ``enum`` then also lists null). An ``output`` schema also
    loses descriptions and defaults: hosts validate results with it, and the tool descriptions
    tell the model what comes back."""
    drop = {"title", "description", "default"} if output else {"title"}
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in drop or (key == "default" and value is None):
            continue
        if key in ("properties", "$defs"):
            out[key] = {name: compact_schema(sub, output=output) for name, sub in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = compact_schema(value, output=output)
        elif key in ("anyOf", "oneOf", "allOf"):
            out[key] = [compact_schema(sub, output=output) for sub in value]
        else:
            out[key] = value
    options = out.get("anyOf")
    if isinstance(options, list) and len(options) == 2 and options[1] == {"type": "null"}:
        first = options[0]
        if isinstance(first.get("type"), str):
            del out["anyOf"]
            out.update({**first, "type": [first["type"], "null"]})
            if "enum" in first:  # an enum lists every allowed value
                out["enum"] = [*first["enum"], None]
    return out


def _stdio_caller(settings: Settings) -> Caller:
    """The ``[mcp] stdio_user`` as a caller.

    Raises:
        ConfigError: not a valid user id.
    """
    try:
        return Caller(frontend="mcp", user_id=settings.mcp.stdio_user)
    except ValidationError:
        raise ConfigError(
            f"{settings.source}: [mcp] stdio_user: must be a name without spaces or ':'"
        ) from None


def build_server(
    source: ImageService | Settings,
    *,
    require_token: bool = False,
    fetcher: UrlFetcher | None = None,
) -> ImageGateServer:
    """The MCP server over an open ``ImageService`` (left open at exit) or over ``Settings``
    (the lifespan opens and closes its own service).

    ``require_token``: HTTP where tokens exist (``serve.require_token``): every request
    needs a bearer token, from ``[[mcp.clients]]`` or the database.

    Raises:
        ConfigError: ``[mcp] stdio_user`` is not a valid user id.
    """
    settings = source.settings if isinstance(source, ImageService) else source
    stdio_caller = _stdio_caller(settings)
    url_fetcher = fetcher or UrlFetcher()
    shared_jobs = JobTracker()
    budgets = Budgets()
    verifier = ClientTokenVerifier(settings, source if isinstance(source, ImageService) else None)

    @asynccontextmanager
    async def lifespan(_server: MCPServer[AppState]) -> AsyncIterator[AppState]:
        if isinstance(source, ImageService):
            yield AppState(source, shared_jobs, url_fetcher, stdio_caller, require_token, budgets)
            return
        service = await ImageService.open(settings)
        verifier.service = service
        jobs = JobTracker()
        try:
            yield AppState(service, jobs, url_fetcher, stdio_caller, require_token, budgets)
        finally:
            await jobs.aclose()
            await service.aclose()

    auth: dict[str, Any] = {}
    if require_token:
        auth = {"token_verifier": verifier, "auth": auth_settings()}
    server = ImageGateServer(
        SERVER_NAME,
        title="imagegate",
        instructions=INSTRUCTIONS,
        version=_version(),
        lifespan=lifespan,
        log_level="WARNING",
        **auth,
    )
    server.jobs = shared_jobs
    server.budgets = budgets
    server.verifier = verifier
    server.require_token = require_token
    _register(server)
    return server


def _register(server: ImageGateServer) -> None:
    """Add the tools (their docstrings are their descriptions) and the image resource."""
    for fn, hints in _TOOLS:
        server.add_tool(
            fn,
            title=hints.title,
            description=" ".join((fn.__doc__ or "").split()),
            annotations=hints,
        )
    server.resource(
        IMAGE_URI_PREFIX + "{image_id}",
        name="image",
        title="Stored image",
        description="A full-size image you made (PNG, JPEG or WebP); only you can read it.",
        mime_type="image/png",
    )(read_image)


# --- parameters -------------------------------------------------------------------------------

Model = Annotated[
    str | None,
    Field(max_length=200, description="Model ref or alias from list_models; default: server's."),
]
# The range is advertised, and checked by core (ImageRequest), so that an agent gets the same
# structured invalid_input error as every other front end instead of a schema error.
Count = Annotated[
    int | None,
    Field(
        json_schema_extra={"minimum": 1, "maximum": MAX_IMAGES_PER_JOB},
        description="How many (default 1, or the user's own); each costs the model's price.",
    ),
]
Seed = Annotated[int | None, Field(ge=0, le=2**32 - 1, description="For repeatable results.")]
StyleName = Annotated[
    str | None,
    Field(max_length=40, description="A style name from list_models; wraps the prompt."),
]
Options = Annotated[
    dict[str, Any] | None,
    Field(description="The model's options, as list_models shows them (e.g. steps)."),
]
ReturnImageParam = Annotated[
    ReturnImage | None,
    Field(description="Inline image: preview (default), full (if small enough) or none."),
]
ImageInput = Annotated[
    str,
    Field(
        min_length=1,
        description="An imagegate://images/{id} URI of yours, a public https URL, or base64"
        f" (bare or data:image/...;base64,...). {FORMAT_NAMES}, size-capped.",
    ),
]
MaxCredits = Annotated[
    int | None,
    Field(ge=0, description="Refuse (spending nothing) if the job could cost more credits."),
]
DryRun = Annotated[
    bool,
    Field(description="Only price the job: credits it would cost and left, warnings; free."),
]
Result = Annotated[CallToolResult, JobOut]


@dataclass(frozen=True)
class Prepared:
    """An image tool's call, checked and turned into a request (or the error that stopped
    it) by ``_prepare``, with the service method that runs it (its idempotency key bound)."""

    app: AppState
    caller: Caller
    request: ImageRequest | None = None
    method: ServiceMethod | None = None
    error: ImageGateError | None = None


ImageTool = Literal["generate", "edit", "upscale"]


def _image_tool(kind: ImageTool) -> Callable[[Callable[..., None]], Callable[..., Any]]:
    """Make an image tool from its declaration: a function whose parameters are the tool's own
    arguments and whose docstring is its description (the body never runs).

    The tool also takes ``_spending``'s arguments. Before it runs, the SDK runs two resolvers
    (its dependency injection): ``_prepare`` checks the arguments and builds the request, then
    ``_consent_after`` asks the user to approve a larger spend, of a request known to be
    valid; the tool then prices or runs it (``_spend``). The SDK hands a resolver the tool
    arguments its signature names, so each tool's are made here from the declaration."""

    def build(declared: Callable[..., None]) -> Callable[..., Any]:
        own = list(inspect.signature(declared, eval_str=True).parameters.values())

        async def prepare(ctx: Context, **args: Any) -> Prepared:
            return await _prepare(ctx, kind, args)

        prepare.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [_param("ctx", Context), *(_param(p.name) for p in own)]
        )

        async def tool(ctx: Context, **args: Any) -> CallToolResult:
            return await _spend(ctx, **args)

        params = [
            _param("ctx", Context),
            *own,
            *inspect.signature(_spending, eval_str=True).parameters.values(),
            _param("job", Annotated[Prepared, Resolve(prepare)]),
            _param("consent", Annotated[Consent, Resolve(_consent_after(prepare))]),
        ]
        tool.__signature__ = inspect.Signature(params, return_annotation=Result)  # type: ignore[attr-defined]
        tool.__annotations__ = {p.name: p.annotation for p in params} | {"return": Result}
        tool.__name__ = tool.__qualname__ = declared.__name__
        tool.__doc__ = declared.__doc__
        return tool

    return build


def _spending(
    return_image: ReturnImageParam = None,
    max_credits: MaxCredits = None,
    dry_run: DryRun = False,
) -> None:
    """The arguments every image tool takes after its own (see ``_image_tool``)."""


def _param(name: str, annotation: Any = inspect.Parameter.empty) -> inspect.Parameter:
    """A parameter of a made signature: ``ctx`` first, the others by name only."""
    kind = (
        inspect.Parameter.POSITIONAL_OR_KEYWORD if name == "ctx" else inspect.Parameter.KEYWORD_ONLY
    )
    return inspect.Parameter(name, kind, annotation=annotation)


async def _prepare(ctx: Context, kind: ImageTool, args: dict[str, Any]) -> Prepared:
    """An image tool's own arguments checked and made into a request, with the service method
    that runs it; or the error that stopped it (nothing is spent then)."""
    app, caller = _app(ctx)
    service = app.service
    methods = {"generate": service.generate, "edit": service.edit, "upscale": service.upscale}
    try:
        for what in ("image", "mask"):
            ref = args.pop(what, None)
            if ref:  # a reference, URL or base64: the image itself from here on
                args[what] = await resolve_image(service, caller, ref, app.fetcher, what=what)
        if kind == "upscale":
            request = ImageRequest.checked(operation="upscale", **args)
        else:
            request = await _personalised(app, caller, args.pop("mode", kind), args)
        key = _idempotency_key(ctx, caller)
    except ImageGateError as exc:
        return Prepared(app, caller, error=exc)
    return Prepared(app, caller, request, partial(methods[kind], idempotency_key=key))


async def _personalised(
    app: AppState, caller: Caller, operation: Operation, args: dict[str, Any]
) -> ImageRequest:
    """The request with the style and the caller's own defaults (model, style, aspect,
    count) filling what the call left out, as on Discord. An MCP call belongs to no
    community, so only the operator's styles exist here.

    Raises:
        InvalidRequestError: an unknown style (or a bad argument; see ``personalise``).
    """
    if "size" in args:
        args["size"] = parse_size(args["size"])
    try:
        return await app.service.personalise(caller, operation, **args)
    except NotFoundError as exc:  # only a named style can be missing
        raise InvalidRequestError(f"{exc.message}; list_models lists the styles") from None


def _consent_after(prepare: Callable[..., Awaitable[Prepared]]) -> Callable[..., Any]:
    """The consent resolver of the tool whose request ``prepare`` builds (the SDK finds a
    resolver's dependencies in its annotations)."""

    async def consent(
        ctx: Context, job: Prepared, max_credits: int | None, dry_run: bool
    ) -> Verdict | Elicit[SpendApproval]:
        key = budget_key(job.caller, _token_id(ctx))
        return await decide(
            ctx,
            job.app.service,
            job.app.budgets,
            key,
            job.request,
            max_credits=max_credits,
            dry_run=dry_run,
        )

    consent.__annotations__ = {
        "ctx": Context,
        "job": Annotated[Prepared, Resolve(prepare)],
        "max_credits": int | None,
        "dry_run": bool,
        "return": Verdict | Elicit[SpendApproval],
    }
    return consent


# --- tools ------------------------------------------------------------------------------------


@_image_tool("generate")
def generate_image(
    prompt: Annotated[
        str, Field(min_length=1, max_length=MAX_PROMPT_CHARS, description="What to draw.")
    ],
    n: Count = None,
    size: Annotated[
        str | None,
        Field(pattern=r"^\d{2,4}x\d{2,4}$", description="WIDTHxHEIGHT, 64-4096 px, e.g. 1024x768."),
    ] = None,
    aspect_ratio: Annotated[
        str | None,
        Field(pattern=r"^\d{1,2}:\d{1,2}$", description="W:H, e.g. 16:9; not with size."),
    ] = None,
    negative_prompt: Annotated[
        str | None, Field(max_length=MAX_PROMPT_CHARS, description="What to leave out.")
    ] = None,
    seed: Seed = None,
    model: Model = None,
    style: StyleName = None,
    options: Options = None,
) -> None:
    """Make new images from a text prompt. Costs the model's price per delivered image (see
    list_models); failed or cancelled jobs cost nothing, and dry_run prices a job for free.
    Returns per image an imagegate://images/{id} URI, size and seed, plus a small preview. A
    job that outlasts the wait returns status "running" and a job_id for get_job."""


@_image_tool("edit")
def edit_image(
    image: ImageInput,
    mode: Annotated[
        EditMode,
        Field(
            description="variation: like the image, strength = how far to move; sketch: a"
            " drawing made real, keeping its lines; inpaint: repaint where the mask is white;"
            " background: new scene around the main subject; avatar: portrait from a face."
        ),
    ],
    prompt: Annotated[
        str, Field(max_length=MAX_PROMPT_CHARS, description="What the result should show.")
    ] = "",
    mask: Annotated[
        str | None,
        Field(
            description="inpaint only: same size as image, white = repaint, black = keep;"
            " same forms as image."
        ),
    ] = None,
    strength: Annotated[
        float | None, Field(ge=0, le=1, description="0-1: how much to change.")
    ] = None,
    n: Count = None,
    seed: Seed = None,
    model: Model = None,
    style: StyleName = None,
    options: Options = None,
) -> None:
    """Change an image you have (a result's URI, a URL or base64): variations, a sketch made
    real, inpainting under a mask, a new background, or an avatar from a face. Costs the
    model's price per delivered image; results, dry_run and waits as generate_image."""


@_image_tool("upscale")
def upscale_image(
    image: ImageInput,
    scale: Annotated[Literal[2, 3, 4] | None, Field(description="2 (default), 3 or 4.")] = None,
    prompt: Annotated[
        str, Field(max_length=MAX_PROMPT_CHARS, description="Guides a prompted upscale.")
    ] = "",
    model: Model = None,
    options: Options = None,
) -> None:
    """Make an image 2x, 3x or 4x larger, e.g. a result worth keeping. Costs the model's upscale
    price (see list_models); results, dry_run and waits as generate_image."""


JobId = Annotated[
    str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$", description="From a result or list_jobs.")
]


async def get_job(
    ctx: Context,
    job_id: JobId,
    wait_s: Annotated[
        float,
        Field(
            ge=0,
            le=600,
            description="Seconds to wait for it to finish (capped by the"
            " server, 45 by default); 0 = just look.",
        ),
    ] = 30,
    return_image: ReturnImageParam = None,
) -> Result:
    """Collect a job that came back "running" (waits up to wait_s), or look one of yours up
    again by job_id. Free."""
    app, caller = _app(ctx)
    bound = min(wait_s, app.settings.mcp.wait_bound_s)
    job = app.jobs.get(caller.key, job_id)
    if job is not None:
        finished = await _follow(ctx, app, job, bound, _Reporter(ctx), owner=False)
        return await _outcome(app, caller, job, finished, return_image)
    try:
        # Started by another process (a replica behind the same load balancer, or before a
        # restart): followed through the database.
        record = await app.service.wait_job(caller, job_id, timeout_s=bound)
        remaining = (await app.service.quota(caller)).remaining
    except ImageGateError as exc:
        return error_result(exc)
    return await record_result(app.service, record, remaining, _mode(app, return_image))


async def cancel_job(ctx: Context, job_id: JobId) -> Annotated[CallToolResult, CancelOut]:
    """Stop one of your running jobs you no longer want (one still "running" after a call, or
    in list_jobs): its held credits are released and it is charged nothing. Free."""
    app, caller = _app(ctx)
    try:
        record = await app.service.cancel(caller, job_id)
        remaining = (await app.service.quota(caller)).remaining
    except ImageGateError as exc:
        return error_result(exc, structured=False)
    return cancel_result(record, remaining)


async def list_jobs(
    ctx: Context,
    limit: Annotated[int, Field(ge=1, le=50, description="Jobs per page.")] = 10,
    cursor: Annotated[
        str | None, Field(max_length=100, description="next_cursor of the previous page.")
    ] = None,
) -> Annotated[CallToolResult, JobsOut]:
    """Your jobs, newest first: status, cost, prompt and image URIs; to find an earlier image
    or job again. Free."""
    app, caller = _app(ctx)
    try:
        page = await app.service.jobs(caller, limit=limit, cursor=cursor)
    except ImageGateError as exc:
        return error_result(exc, structured=False)
    return jobs_result(page)


class StyleOut(BaseModel):
    """A style: pass its name as ``style``."""

    name: str
    description: str = ""


class ModelsOut(BaseModel):
    """Models you can use, with their operations and prices in credits per image, and the
    styles."""

    default_model: str
    models: list[ModelInfo]
    styles: list[StyleOut]


async def list_models(ctx: Context) -> ModelsOut:
    """Before picking a model, style or price: models with operations (generate, variation,
    sketch, inpaint, background, avatar, upscale), max images per job, price in credits per
    image and options; and the styles. Free."""
    app, _ = _app(ctx)
    styles = [StyleOut(name=s.name, description=s.description) for s in await app.service.styles()]
    return ModelsOut(
        default_model=app.service.default_model, models=app.service.models(), styles=styles
    )


async def get_quota(ctx: Context) -> QuotaStatus:
    """Before a batch, or after quota_exceeded: your credits left, allowance per period,
    granted, held by running jobs, and when the period resets. Free."""
    app, caller = _app(ctx)
    return await app.service.quota(caller)


async def read_image(image_id: str, ctx: Context) -> bytes:
    """The full-size bytes of one of the caller's images."""
    app = cast(AppState, ctx.request_context.lifespan_context)
    caller = app.caller(ctx)
    try:
        if caller is None:
            raise NotFoundError(f"no image {image_id!r} of yours")
        _, data = await app.service.image(caller, image_id)
    except NotFoundError as exc:
        raise ResourceNotFoundError(exc.message) from None
    return data


def _reads(title: str) -> ToolAnnotations:
    return ToolAnnotations(title=title, read_only_hint=True, open_world_hint=False)


def _spends(title: str) -> ToolAnnotations:
    return ToolAnnotations(
        title=title,
        read_only_hint=False,
        destructive_hint=False,
        idempotent_hint=False,
        open_world_hint=True,
    )


_TOOLS: list[tuple[Callable[..., Any], ToolAnnotations]] = [
    (generate_image, _spends("Generate image")),
    (edit_image, _spends("Edit image")),
    (upscale_image, _spends("Upscale image")),
    (get_job, _reads("Get job")),
    (
        cancel_job,
        ToolAnnotations(
            title="Cancel job",
            read_only_hint=False,
            destructive_hint=True,  # stops work the user asked for
            idempotent_hint=True,
            open_world_hint=False,
        ),
    ),
    (list_jobs, _reads("List jobs")),
    (list_models, _reads("List models")),
    (get_quota, _reads("Get quota")),
]


# --- running jobs -----------------------------------------------------------------------------


async def _spend(
    ctx: Context,
    job: Prepared,
    consent: Consent,
    return_image: ReturnImage | None,
    max_credits: int | None,
    dry_run: bool,
    **_: Any,
) -> CallToolResult:
    """Price the job (``dry_run``) or, once its spend is approved, run it, waiting up to the
    bound; never more than the user approved. (The tool's own arguments, also passed, are in
    ``job`` already.)"""
    if job.error is not None:
        return error_result(job.error)
    app, caller, request, method = job.app, job.caller, job.request, job.method
    assert request is not None and method is not None  # a Prepared without error has both
    try:
        if dry_run:
            return estimate_result(await app.service.estimate(caller, request))
        key = budget_key(caller, _token_id(ctx))
        approved = allowed_cost(consent, app.service, app.budgets, key, request)
    except ImageGateError as exc:
        return error_result(exc, remaining=(await app.service.quota(caller)).remaining)
    limits = [x for x in (max_credits, approved) if x is not None]
    return await _run(ctx, app, caller, request, method, return_image, min(limits, default=None))


async def _run(
    ctx: Context,
    app: AppState,
    caller: Caller,
    request: ImageRequest,
    method: ServiceMethod,
    return_image: ReturnImage | None,
    max_credits: int | None,
) -> CallToolResult:
    """Run the job, waiting up to the bound with progress notifications."""

    def call(progress: Progress) -> Coroutine[Any, Any, ImageResult]:
        return method(caller, request, progress=progress, max_credits=max_credits)

    job = app.jobs.start(caller.key, request.n, call)
    finished = await _follow(
        ctx, app, job, app.settings.mcp.wait_bound_s, _Reporter(ctx), owner=True
    )
    return await _outcome(app, caller, job, finished, return_image)


async def _follow(
    ctx: Context, app: AppState, job: TrackedJob, bound: float, reporter: _Reporter, *, owner: bool
) -> bool:
    """Wait up to ``bound`` seconds with progress notifications; True if the job finished.

    The owner's call being cancelled cancels the job (its hold is released)."""
    interval = app.settings.mcp.progress_interval_s
    deadline = time.monotonic() + bound
    try:
        while True:
            await reporter.report(job)
            if job.done:
                return True
            left = deadline - time.monotonic()
            if left <= 0 and job.job_id is not None:
                return False
            await job.wait_changed(min(interval, left) if left > 0 else interval)
    except BaseException:
        if owner and not job.done:
            await app.jobs.cancel(job)
        raise


async def _outcome(
    app: AppState, caller: Caller, job: TrackedJob, finished: bool, return_image: ReturnImage | None
) -> CallToolResult:
    if not finished:
        status = await app.service.quota(caller)
        return running_result(job.job_id or "", None, job.elapsed, status.remaining)
    if job.task.cancelled():
        # The owner's call was cancelled: the service recorded what the job cost, if it began.
        if job.job_id is None:
            return error_result(JobCancelledError("the job was cancelled before it began"))
        record = await app.service.job(caller, job.job_id)
        left = (await app.service.quota(caller)).remaining
        return await record_result(app.service, record, left, _mode(app, return_image))
    exc = job.task.exception()
    if exc is None:
        return await image_result(
            app.service, job.task.result(), _mode(app, return_image), requested=job.n
        )
    if not isinstance(exc, ImageGateError):
        raise exc
    try:
        remaining: int | None = (await app.service.quota(caller)).remaining
    except ImageGateError:
        remaining = None
    return error_result(exc, remaining=remaining)


class _Reporter:
    """Progress notifications whose ``progress`` only ever grows; a failed send is ignored."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.last = 0.0

    async def report(self, job: TrackedJob) -> None:
        value = round(max(job.elapsed, self.last + 0.1), 1)
        self.last = value
        with contextlib.suppress(Exception):
            await self.ctx.report_progress(value, None, _phase(job))


def _phase(job: TrackedJob) -> str:
    if job.done:
        failed = job.task.cancelled() or job.task.exception() is not None
        return "failed" if failed else "finished"
    if job.job_id is None:
        return "checking the request and reserving credits"
    if job.phase == "queued" and job.position:
        return (
            f"queued for {job.provider}, position {job.position} (job {job.job_id}),"
            f" {job.elapsed:.0f} s"
        )
    images = f"{job.n} image{'' if job.n == 1 else 's'}"
    detail = f" {job.detail}," if job.detail else ""
    return f"generating {images} (job {job.job_id}),{detail} {job.elapsed:.0f} s"


# --- helpers ----------------------------------------------------------------------------------


def _app(ctx: Context) -> tuple[AppState, Caller]:
    app = cast(AppState, ctx.request_context.lifespan_context)
    caller = app.caller(ctx)
    if caller is None:
        raise ToolError("authentication required: send a bearer token")
    return app, caller


def _token_user(ctx: Context) -> str | None:
    token = _access_token(ctx)
    return token.subject if token is not None else None


def _token_id(ctx: Context) -> str:
    """A short digest of the caller's bearer token ("local" without one): what spending
    allowances are kept per."""
    token = _access_token(ctx)
    if token is None:
        return "local"
    return hashlib.sha256(token.token.encode("utf-8", "surrogatepass")).hexdigest()[:16]


def _access_token(ctx: Context) -> AccessToken | None:
    request = ctx.request_context.request
    scope = getattr(request, "scope", None)
    user = scope.get("user") if isinstance(scope, dict) else None
    return user.access_token if isinstance(user, AuthenticatedUser) else get_access_token()


def _idempotency_key(ctx: Context, caller: Caller) -> str | None:
    """What makes a call the same request as an earlier one, so that sent again it gets the
    first result instead of being charged again (docs/mcp.md, Replays):

    - the client's own key, ``_meta`` ``imagegate/idempotencyKey``, on any protocol and
      connection: the same key from the same user is the same request;
    - else, on a connection that lasts across requests (the handshake protocols, up to
      2025-11-25: stdio, or an HTTP session), the request id within that connection;
    - else None, a new job: on 2026-07-28 each request stands alone and every client numbers
      its requests from 0, so an id (with the same token, even the same arguments) cannot
      tell a request sent again from a new one.

    Raises:
        InvalidRequestError: a key that is not a string of 1 to 200 printable characters.
    """
    meta: Mapping[str, object] = ctx.request_context.meta or {}
    if IDEMPOTENCY_KEY in meta:
        own = meta[IDEMPOTENCY_KEY]
        if not isinstance(own, str) or not 0 < len(own) <= 200 or not own.isprintable():
            raise InvalidRequestError(
                f"_meta {IDEMPOTENCY_KEY} must be a string of 1 to 200 printable characters,"
                " one per call (a UUID, say), the same when the call is sent again"
            )
        return f"mcp:{caller.key}:key:{own}"
    if ctx.protocol_version not in HANDSHAKE_PROTOCOL_VERSIONS:
        return None
    state = connection_state(ctx)
    if state is None or ctx.request_context.request_id is None:
        return None
    # A random token per connection: a new connection's ids never meet an old one's.
    token = state.setdefault("imagegate.connection", secrets.token_hex(8))
    return f"mcp:{caller.key}:{token}:{ctx.request_id}"


_missed_connection: list[str] = []


def connection_state(ctx: Context) -> dict[str, Any] | None:
    """The SDK's per-connection scratch dict (``Connection.state``), or None.

    The high-level ``Context`` offers no public way to the connection: its ``ServerSession``
    keeps it as ``_connection``. This is the one place that reads it. Should an SDK release
    drop it, a warning is logged once and calls without their own idempotency key get a fresh
    one (a replayed request is then charged again, not refused); a test checks it against the
    real SDK. (On 2026-07-28 the SDK makes a connection per request: not used there.)"""
    connection = getattr(ctx.session, "_connection", None)
    state = getattr(connection, "state", None)
    if isinstance(state, dict):
        return state
    if not _missed_connection:
        _missed_connection.append(type(ctx.session).__name__)
        log.warning(
            "the MCP SDK's %s has no connection state: replayed requests cannot be recognised",
            type(ctx.session).__name__,
        )
    return None


def _mode(app: AppState, return_image: ReturnImage | None) -> ReturnImage:
    return return_image or app.settings.mcp.return_image


def _version() -> str:
    try:
        return importlib.metadata.version("imagegate")
    except importlib.metadata.PackageNotFoundError:
        return "0"
