"""``ImageService``: the one object the front ends call.

Every job goes: check the request and plan it (bad input costs nothing) -> reserve credits ->
run the orchestrator -> store what arrived -> settle for the delivered images (or release on
any failure, timeout or cancellation) -> report. Nothing is charged twice (idempotency keys),
nothing delivered is lost (stored before settling), and a crash never locks credits away
(every process holds a lease in the database; the holds and jobs of a process whose lease
lapsed are released by the next start-up or sweep, see core.leases).
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import hashlib
import json
import logging
import os
import time
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal, TypedDict, Unpack

import httpx

from . import images
from .alerts import Alert, AlertBook
from .callbacks import CallbackHub
from .db import Database, Tx, open_database
from .errors import (
    ConfigError,
    ImageGateError,
    InvalidRequestError,
    JobCancelledError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
    SpendLimitError,
)
from .http import make_http_client
from .leases import Leases
from .moderation import find_in_texts
from .orchestrator import Delivered, Orchestrator, Outcome
from .personal import (
    MAX_STYLES_PER_SCOPE,
    Preferences,
    Style,
    make_style,
    prefs_scope,
    styles_from_document,
    styles_scope,
)
from .progress import Progress, forward_to, reporting_to
from .providers import ImageModel, Plan
from .queue import ProviderQueues, Ticket
from .quota import Hold, Policy, QuotaStore
from .registry import Registry
from .reports import (
    Digest,
    ImageSummary,
    JobSummary,
    ProviderRunway,
    Reports,
    Usage,
    amount_text,
    parse_balance,
)
from .scopes import ScopeSettingsStore, check_scope
from .settings import Settings
from .store import ImageStore, StoredFile, copy_out, new_id
from .tokens import TokenInfo, TokenStore, bare_prefix
from .types import (
    EDIT_MODES,
    OPERATIONS,
    Caller,
    Estimate,
    GeneratedImage,
    ImagePage,
    ImageRequest,
    ImageResult,
    InputImage,
    JobPage,
    JobRecord,
    LedgerEntry,
    ModelInfo,
    Operation,
    QuotaStatus,
    StoredImage,
    image_reference,
)

log = logging.getLogger("imagegate")

_SMALL_IMAGE_BYTES = 1024 * 1024  # decoding one takes a few ms and little memory
_QUEUE_REPORT_INTERVAL_S = 1.0  # a queued job's position is reported at most this often
_SMALL_IMAGE_PIXELS = 1024 * 1024  # inputs: bytes say little (a flat 40 MP PNG is 100 kB)
CANCEL_POLL_S = 1.0  # how often a process looks for cancel requests for its running jobs
LOG_SINK = "log"  # the alerts the service logs itself (``check_alerts``)
MAX_OWN_TOKENS = 5  # active MCP tokens a user may mint for themselves


class JobOptions(TypedDict, total=False):
    """How a job of ``ImageService`` (generate, edit, upscale, rerun, from_result) runs.
    ``idempotency_key``: a request sent again under the same key gets the first job's result,
    not a second job (and charge); ``progress``: told each stage; ``max_credits``: refuse the
    job, before reserving anything, if it could cost more (see ``ImageService.estimate``)."""

    idempotency_key: str | None
    progress: Progress | None
    max_credits: int | None


@dataclass(frozen=True)
class ProviderInfo:
    """A configured provider as ``imagegate providers`` shows it (never the key itself)."""

    name: str
    kind: str
    base_url: str
    api_key_env: str | None
    key_set: bool
    models: list[str]
    balance: str | None = None
    available: list[str] | None = None  # the models the provider serves now, if it lists them
    key_optional: bool = False  # works without a key (self-hosted, or the Horde's anonymous)


class ImageService:
    """Open once per process with ``await ImageService.open(settings)``; ``aclose()`` at exit."""

    def __init__(
        self,
        settings: Settings,
        db: Database,
        http: httpx.AsyncClient,
        registry: Registry,
        callbacks: CallbackHub | None,
        *,
        owns_http: bool,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.db = db
        self.http = http
        self.registry = registry
        self.callbacks = callbacks
        self.clock = clock
        self.quotas = QuotaStore(db, clock)
        self.store = ImageStore(
            db, settings.images.dir, durable=settings.database.synchronous == "FULL", clock=clock
        )
        self.scopes = ScopeSettingsStore(db)
        self.tokens = TokenStore(db, clock)
        self.reports = Reports(db, clock)
        self.alert_book = AlertBook(db)
        self._balance_errors: dict[str, tuple[int, str]] = {}
        self.orchestrator = Orchestrator(max_retries=settings.defaults.max_retries)
        self.queues = ProviderQueues()
        self.leases = Leases(db, settings.database.lease_s, clock)
        self.owner = self.leases.instance_id  # of every hold and job this process makes
        self._owns_http = owns_http
        self._sweeper: asyncio.Task[None] | None = None
        self._lease_keeper: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._alerter: asyncio.Task[None] | None = None
        self._local: dict[str, _LocalJob] = {}  # jobs running in this process, by id
        self._decode_slots = asyncio.Semaphore(max(1, (os.cpu_count() or 2) - 1))
        self._styles_lock = asyncio.Lock()

    @classmethod
    async def open(
        cls,
        settings: Settings,
        *,
        http: httpx.AsyncClient | None = None,
        sweeper: bool = True,
        receive_callbacks: bool = False,
        check_default: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> ImageService:
        """Open the database, build the models, take this process's lease, release what
        processes whose lease lapsed left behind, and check the files of the images recorded
        last (``ImageStore.check_recent``). The lease is renewed in the background until
        ``aclose``; ``sweeper`` (every long-running front end: the bot, the MCP server,
        ``imagegate serve``) also releases, every ``[quota] sweep_interval_s``, what other
        processes leave behind later, and logs the ``[alerts]`` due (``check_alerts``), from
        start-up and every ``[alerts] check_interval_s``.

        ``receive_callbacks``: this process serves ``service.callbacks.app`` (``imagegate
        serve`` does), so providers may answer asynchronously when ``[callbacks] public_url``
        is set; other processes (CLI, stdio MCP, a lone bot) wait or poll instead.
        ``check_default=False`` opens even with an unknown ``[defaults] model`` (then in
        ``config_problem``), for commands that only list what is configured.
        ``clock`` (epoch seconds) stamps credits, jobs and tokens: tests seed history with it.

        Raises:
            ConfigError: the settings cannot work (unknown alias target, missing price, ...).
        """
        # Warmed at once, off the event loop, when a provider will be called over HTTP.
        calls_out = any(p.kind != "placeholder" for p in settings.providers.values())
        client = http or make_http_client(warm=calls_out)
        callbacks = None
        if receive_callbacks and settings.callbacks.public_url:
            callbacks = CallbackHub(settings.callbacks.public_url, settings.callbacks.path)
        try:
            registry = Registry(settings, client, callbacks)
            if check_default and registry.default_problem is not None:
                raise registry.default_problem
            db = await open_database(settings.database)
        except BaseException:
            if http is None:
                await client.aclose()
            raise
        service = cls(
            settings, db, client, registry, callbacks, owns_http=http is None, clock=clock
        )
        try:
            await service.leases.register()
        except BaseException:
            await service.aclose()
            raise
        service._lease_keeper = asyncio.create_task(service.leases.keep())
        await service.recover()
        await service.store.check_recent()
        if sweeper:
            service._sweeper = asyncio.create_task(service._sweep_forever())
            service._watcher = asyncio.create_task(service._watch_cancels())
            if settings.alerts.runway_days or settings.alerts.failure_rate:
                service._alerter = asyncio.create_task(service._log_alerts_forever())
        return service

    async def aclose(self) -> None:
        for task in (self._sweeper, self._lease_keeper, self._watcher, self._alerter):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._lease_keeper is not None:
            with contextlib.suppress(Exception):  # else it lapses by itself
                await self.leases.drop()
        if self._owns_http:
            await self.http.aclose()
        await self.db.close()

    async def __aenter__(self) -> ImageService:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # --- jobs -------------------------------------------------------------------------------

    async def generate(
        self, caller: Caller, request: ImageRequest, **options: Unpack[JobOptions]
    ) -> ImageResult:
        """Text to image, run as ``options`` say (``JobOptions``).

        Raises:
            InvalidRequestError, UnknownModelError: bad input; nothing was spent.
            SpendLimitError: the job could cost more than ``max_credits``; nothing was spent.
            QuotaExceededError, RateLimitedError: refused before any provider call.
            ContentRejectedError, ProviderError, JobTimeoutError: the job failed and its hold
                was released; nothing was charged.
        """
        _expect(request, ("generate",))
        return await self._run(caller, request, **options)

    async def edit(
        self, caller: Caller, request: ImageRequest, **options: Unpack[JobOptions]
    ) -> ImageResult:
        """An edit mode (variation, sketch, inpaint, background, avatar); as ``generate``."""
        _expect(request, EDIT_MODES)
        return await self._run(caller, request, **options)

    async def upscale(
        self, caller: Caller, request: ImageRequest, **options: Unpack[JobOptions]
    ) -> ImageResult:
        """Upscale one input image; as ``generate``."""
        _expect(request, ("upscale",))
        return await self._run(caller, request, **options)

    async def rerun(
        self,
        caller: Caller,
        job_id: str,
        *,
        new_seed: bool = True,
        shared: bool = False,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        **options: Unpack[JobOptions],
    ) -> ImageResult:
        """Run a stored job again with the same settings (and a new seed): a reroll. With
        ``prompt`` (and ``negative_prompt``; ``""`` drops it) the new text replaces the job's,
        everything else kept: a remix. It is a new job, charged as one, run as ``options``
        say (``JobOptions``).

        ``shared``: the job may be someone else's that a front end showed this caller (a
        public Discord result); the caller pays. Only a generate job can be rerun by another
        user, since an edit's input image is its owner's upload.

        Raises:
            NotFoundError: no such job (or not the caller's, without ``shared``).
            InvalidRequestError: someone else's edit; then as ``generate``.
        """
        job = await self.job(caller, job_id, shared=shared)
        if job.user != caller.key and job.operation != "generate":
            raise InvalidRequestError(
                "only the person who made this edit can run it again (it uses their image);"
                " make variations of the result instead"
            )
        fields = await self.store.request_from_record(job.request)
        if new_seed:
            fields["seed"] = None
        if prompt is not None:
            fields["prompt"] = prompt
            fields["negative_prompt"] = negative_prompt or None
        request = ImageRequest.model_validate(fields)
        return await self._run(caller, request, **options)

    async def from_result(
        self,
        caller: Caller,
        job_id: str,
        index: int,
        operation: Literal["variation", "upscale"],
        *,
        shared: bool = False,
        prefer: str | None = None,
        n: int | None = None,
        **options: Unpack[JobOptions],
    ) -> ImageResult:
        """Variations (with the job's prompt, ``n`` images, by default as many as the job
        made) or an upscale of image ``index`` (from 1) of a stored job. The model is the
        job's if it can do ``operation``, else ``prefer``, else as ``model_for`` chooses.
        ``shared`` as in ``rerun``; ``options`` as in ``generate``.

        Raises:
            NotFoundError: no such job (or not the caller's, without ``shared``).
            InvalidRequestError: the job has no image ``index``; then as ``generate``.
        """
        job = await self.job(caller, job_id, shared=shared)
        if not 1 <= index <= len(job.images):
            raise InvalidRequestError(f"this result has no image {index}")
        image = await self.input_from_image(caller, job.images[index - 1].id, shared=shared)
        model = self.model_for(operation, job.request.get("model"), prefer)
        if operation == "upscale":
            request = ImageRequest.checked(operation="upscale", image=image, model=model)
            return await self.upscale(caller, request, **options)
        request = ImageRequest.checked(
            operation="variation",
            prompt=str(job.request.get("prompt") or ""),
            image=image,
            n=n or int(job.request.get("n") or 1),
            model=model,
        )
        return await self.edit(caller, request, **options)

    async def estimate(self, caller: Caller, request: ImageRequest) -> Estimate:
        """What ``request`` would cost the caller, checked and planned as a real job is, but
        with nothing reserved and no provider called: a dry run.

        Raises:
            InvalidRequestError, UnknownModelError: the job would be refused as it stands.
        """
        _expect(request, OPERATIONS)
        self._screen(request)
        chain = await self._plan_chain(caller, request, afford=False)
        price = max(self._prices(request, chain).values())
        remaining = (await self.quota(caller)).remaining
        warnings = list(chain[0][1].warnings)
        if request.n * price > remaining:
            warnings.append(
                f"not enough credits: this job can cost up to {request.n * price}"
                f" and you have {remaining} left"
            )
        return Estimate(
            operation=request.operation,
            model=chain[0][0].ref,
            n=request.n,
            price_per_image=price,
            credits=request.n * price,
            credits_remaining=remaining,
            warnings=warnings,
        )

    def max_cost(self, request: ImageRequest) -> int:
        """The most ``request`` can cost, in memory (no planning, no I/O): ``n`` images at the
        highest price among the models of its chain that can do its operation. ``estimate``
        and the job itself (which plan it) may find less, never more.

        Raises:
            UnknownModelError: the model is unknown.
            InvalidRequestError: no model of its chain can do the operation.
        """
        operation = request.operation
        models = [
            m
            for m in self.registry.resolve(request.model)
            if operation in m.capabilities.operations
        ]
        if not models:
            raise InvalidRequestError(
                f"{request.model or self.default_model} cannot do {operation}"
            )
        return request.n * max(self.registry.price(m.ref, operation) for m in models)

    def _prices(
        self, request: ImageRequest, chain: list[tuple[ImageModel, Plan]]
    ) -> dict[str, int]:
        """Credits per delivered image for each model of the chain."""
        return {model.ref: self.registry.price(model.ref, request.operation) for model, _ in chain}

    async def _run(
        self, caller: Caller, request: ImageRequest, **options: Unpack[JobOptions]
    ) -> ImageResult:
        self._screen(request)
        chain = await self._plan_chain(caller, request)
        prices = self._prices(request, chain)
        most = request.n * max(prices.values())
        max_credits = options.get("max_credits")
        if max_credits is not None and most > max_credits:
            raise SpendLimitError(
                f"this job can cost up to {most} credits ({request.n} x"
                f" {max(prices.values())}), more than max_credits {max_credits}",
                price=most,
                limit=max_credits,
            )
        record = await self.store.request_record(request)
        job_id = new_id()
        model_ref = chain[0][0].ref

        async def record_job(tx: Tx, hold: Hold) -> None:
            await self.store.insert_job(
                tx,
                job_id,
                user=caller.key,
                request=record,
                model=model_ref,
                hold_id=hold.hold_id,
                owner=self.owner,
            )

        hold = await self._reserve_or_undo(
            job_id,
            self.quotas.reserve(
                caller.key,
                amount=most,
                idem_key=options.get("idempotency_key") or f"auto:{job_id}",
                request_hash=_hash(caller.key, model_ref, record),
                policy=self.policy(caller),
                job_id=job_id,
                owner=self.owner,
                also=record_job,
            ),
        )
        if hold.replayed:
            return await self._replay(caller, hold)
        stop = asyncio.Event()  # set by ``cancel``: the job ends, keeping what arrived
        local = self._local[job_id] = _LocalJob(
            self._execute(
                caller, request, chain, prices, hold, job_id, options.get("progress"), stop
            ),
            stop,
        )
        try:
            return await local.result()
        except BaseException as exc:
            charged = await asyncio.shield(self._abandon(hold, job_id, exc))
            if isinstance(exc, ImageGateError):
                exc.ended_job(job_id, charged=charged, refunded=charged == 0)
            raise
        finally:
            del self._local[job_id]
            local.closed.set()

    async def cancel(self, caller: Caller, job_id: str, *, moderator: bool = False) -> JobRecord:
        """Stop one of the caller's running jobs (a ``moderator``, a front end's judgement such
        as Discord's Manage Messages, may stop anyone's). A job still queued ends at once and
        costs nothing; one generating stops waiting for its provider, keeps and charges the
        images already delivered, and the rest of its hold is released. A job running in
        this process stops at once; one in another process sharing the database stops within
        about ``CANCEL_POLL_S`` (the request is recorded, and that process acts on it).

        Returns the job as it stands then: ``cancelled``, still ``running`` with
        ``cancel_requested`` (elsewhere), or already finished (nothing to cancel).

        Raises:
            NotFoundError: no such job, or not the caller's (without ``moderator``).
        """
        job = await self.job(caller, job_id, shared=moderator)
        if job.status != "running":
            return job
        await self.store.request_cancel(job_id)
        local = self._local.get(job_id)
        if local is not None:
            local.stop.set()
            await asyncio.shield(local.closed.wait())
        log.info("job %s: cancel requested by %s", job_id, caller.key)
        return await self.job(caller, job_id, shared=moderator)

    async def _watch_cancels(self) -> None:
        """Stop the jobs of this process that another process asked to cancel."""
        while True:
            await asyncio.sleep(CANCEL_POLL_S)
            if not self._local:
                continue
            try:
                wanted = await self.store.cancels_requested(list(self._local))
            except Exception:  # the watcher must outlive a transient database error
                log.exception("cancel watcher failed")
                continue
            for job_id in wanted:
                if (local := self._local.get(job_id)) is not None:
                    local.stop.set()

    async def save_copies(self, images: list[StoredImage], directory: Path) -> list[Path]:
        """Copy delivered images into ``directory`` as files (``<job_id>-<index>.<ext>``), for
        clients that read files rather than resources; returns their absolute paths.

        Raises:
            OSError: the directory or a copy cannot be written.
        """
        return await asyncio.to_thread(lambda: [copy_out(i, directory) for i in images])

    async def jobs(self, caller: Caller, *, limit: int = 20, cursor: str | None = None) -> JobPage:
        """A page of the caller's jobs with their images, newest first (status, cost, error);
        pass ``next_cursor`` back for the next page.

        Raises:
            InvalidRequestError: ``limit`` is not 1-100, or a cursor this service did not give.
        """
        return await self.store.jobs_of(caller.key, limit=_page_size(limit), cursor=cursor)

    async def images(
        self, caller: Caller, *, limit: int = 50, cursor: str | None = None
    ) -> ImagePage:
        """A page of the caller's stored images, newest first; raises as ``jobs``."""
        return await self.store.images_of(caller.key, limit=_page_size(limit), cursor=cursor)

    async def _reserve_or_undo(self, job_id: str, reserving: Awaitable[Hold]) -> Hold:
        """Await a reservation (hold and job record, one transaction) so that cancelling the
        caller never strands it: a transaction under way commits whatever happens to its
        caller (an MCP client that disconnects, say), so on cancellation this waits for it
        and releases what it made, marking the job cancelled, before the cancellation goes on.
        """
        transaction = asyncio.ensure_future(reserving)
        try:
            return await asyncio.shield(transaction)
        except asyncio.CancelledError:
            await asyncio.shield(self._undo_reservation(transaction, job_id))
            raise

    async def _undo_reservation(self, transaction: asyncio.Future[Hold], job_id: str) -> None:
        try:
            hold = await transaction
        except Exception:  # refused or failed: nothing was reserved
            return
        if not hold.replayed:
            await self._abandon(hold, job_id, asyncio.CancelledError())

    def _screen(self, request: ImageRequest) -> None:
        """Refuse a request whose text (as the provider would receive it) holds one of the
        operator's ``[moderation] banned_words``; front ends add their own lists before this.

        Raises:
            InvalidRequestError: naming the word; nothing was spent.
        """
        word = find_in_texts(request.provider_texts(), self.settings.moderation.banned_words)
        if word:
            raise InvalidRequestError(f"this service does not allow “{word}” in prompts")

    async def _plan_chain(
        self, caller: Caller, request: ImageRequest, *, afford: bool = True
    ) -> list[tuple[ImageModel, Plan]]:
        """Plans for the requested model and each fallback that can serve the request.

        With input images, planning is image work (decoding every upload in full, converting
        masks and formats), seconds for a large image: it starts only once the caller is known
        to afford the job (unless ``afford`` is False: a dry run reports that as a warning),
        and runs in a worker thread, large images one slot at a time.

        Raises:
            QuotaExceededError: the caller cannot afford the job (checked before image work).
            InvalidRequestError: the request or an input image cannot be used.
        """
        models = self.registry.resolve(request.model)
        inputs = [image for image in (request.image, request.mask) if image is not None]
        if not inputs:
            return _plans(models, request)
        if afford:
            price = self.registry.price(models[0].ref, request.operation)
            await self.quotas.check_affordable(caller.key, request.n * price, self.policy(caller))
        if sum(image.width * image.height for image in inputs) <= _SMALL_IMAGE_PIXELS:
            return await asyncio.to_thread(self._check_and_plan, models, request)
        async with self._decode_slots:
            return await asyncio.to_thread(self._check_and_plan, models, request)

    def _check_and_plan(
        self, models: list[ImageModel], request: ImageRequest
    ) -> list[tuple[ImageModel, Plan]]:
        """Decode every uploaded input in full (``load_input`` read only its header), then
        plan. Our stored results were decoded when they were stored."""
        for image, what in ((request.image, "input image"), (request.mask, "mask")):
            if image is not None and image.source_image_id is None:
                images.inspect(image.data, max_pixels=self.settings.images.max_pixels, what=what)
        return _plans(models, request)

    async def _execute(
        self,
        caller: Caller,
        request: ImageRequest,
        chain: list[tuple[ImageModel, Plan]],
        prices: dict[str, int],
        hold: Hold,
        job_id: str,
        progress: Progress | None,
        stop: asyncio.Event,
    ) -> ImageResult:
        outcome = await self._produce(request, chain, job_id, progress, stop)
        stored = await self.store.save_images(
            job_id, [(d.model.ref, d.image, d.checked) for d in outcome.delivered]
        )
        status = "succeeded" if outcome.error is None else "partial" if stored else "failed"
        if isinstance(outcome.error, JobCancelledError) and stored:
            status = "cancelled"
        error = outcome.error.message if outcome.error else None

        async def record_results(tx: Tx, charged: int) -> None:
            await self.store.record_results(
                tx,
                job_id,
                caller.key,
                stored,
                status=status,
                credits_charged=charged,
                warnings=outcome.warnings,
                error=error,
            )

        charged, quota = await self.quotas.settle_and_report(
            hold.hold_id,
            sum(prices[d.model.ref] for d in outcome.delivered),
            policy=self.policy(caller),
            also=record_results,
        )
        if not stored:
            assert outcome.error is not None
            raise outcome.error
        warnings = [
            *outcome.warnings,
            *_shortfall(outcome.error, len(stored), request.n, charged, hold),
        ]
        model = _model_of(outcome.delivered)
        log.info(
            "job %s %s by %s: %d image(s), %d credit(s)",
            job_id,
            request.operation,
            caller.key,
            len(stored),
            charged,
        )
        return ImageResult(
            job_id=job_id,
            operation=request.operation,
            model=model,
            images=stored,
            credits_charged=charged,
            credits_remaining=quota.remaining,
            warnings=warnings,
        )

    async def _produce(
        self,
        request: ImageRequest,
        chain: list[tuple[ImageModel, Plan]],
        job_id: str,
        progress: Progress | None,
        stop: asyncio.Event,
    ) -> Outcome:
        """Wait for a slot at the first model's provider (reporting the queue position), then
        run the job within its deadline; the slot is given back however it ends. ``stop``
        ends the wait in the queue (``JobCancelledError``) or the provider calls (the images
        delivered are kept). The order of progress events is documented in
        ``core.progress``."""
        first = chain[0][0]
        job = {"job_id": job_id, "provider": first.ctx.name, "model": first.ref}
        ticket = self.queues.get(first.ctx.name, first.ctx.settings.max_concurrency).enter()
        try:
            await _unless(stop, _queue_wait(ticket, job, progress))
            await _tell(progress, "generating", {**job, "n": request.n})
            started = time.monotonic()
            deadline = started + self.settings.defaults.job_deadline_s
            receiver = forward_to(progress, {"job_id": job_id}) if progress else None
            with reporting_to(receiver):
                outcome = await self.orchestrator.run(
                    chain, deadline, self._check_image, cancel=stop
                )
            ticket.queue.record(time.monotonic() - started)  # finished runs only
            return outcome
        finally:
            ticket.leave()

    async def _check_image(self, model: ImageModel, image: GeneratedImage) -> StoredFile:
        """Decode the image to check it, then write it to the store, in one trip to a worker
        thread (``save_images`` then only records it). Large images take one of a few slots,
        so a job of many never holds all their decoded pixels in memory at once."""
        if len(image.data) < _SMALL_IMAGE_BYTES:
            return await asyncio.to_thread(self._check_and_store, model.ctx.name, image.data)
        async with self._decode_slots:
            return await asyncio.to_thread(self._check_and_store, model.ctx.name, image.data)

    def _check_and_store(self, provider: str, data: bytes) -> StoredFile:
        info = images.inspect(
            data, max_pixels=self.settings.images.max_pixels, what=f"image from {provider}"
        )
        return self.store.write_checked(data, info)

    async def _abandon(self, hold: Hold, job_id: str, exc: BaseException) -> int:
        """Release the hold of a failed job (at most once) and record why; returns what the
        job was charged after all (0 unless it was settled before it failed)."""
        released = await self.quotas.release(hold.hold_id)
        cancelled = isinstance(exc, asyncio.CancelledError | JobCancelledError)
        message = exc.message if isinstance(exc, ImageGateError) else type(exc).__name__
        state = await self.quotas.hold_state(hold.hold_id)
        charged = (state[1] or 0) if state and state[0] == "settled" else 0
        if released or charged == 0:
            await self.store.finish_job(
                job_id,
                status="cancelled" if cancelled else "failed",
                credits_charged=charged,
                warnings=[],
                error="the job was cancelled before it finished" if cancelled else message,
            )
        if not isinstance(exc, ImageGateError | asyncio.CancelledError):
            log.error("job %s failed unexpectedly: %s", job_id, type(exc).__name__)
        return charged

    async def _replay(self, caller: Caller, hold: Hold) -> ImageResult:
        """The stored result of a request seen before under the same idempotency key."""
        job = await self.store.job(hold.job_id or "")
        if hold.state == "held" or (job is not None and job.status == "running"):
            raise RateLimitedError(f"this request is already running as job {hold.job_id}")
        # Images of a job that was refunded (the process died before charging) are not handed
        # out: only a delivered job (succeeded or partial, and so charged) is replayed.
        if job is None or not job.images or job.status not in ("succeeded", "partial"):
            raise InvalidRequestError(
                f"this request already ran and failed (job {hold.job_id}); send a new one"
            )
        remaining = (await self.quota(caller)).remaining
        return ImageResult.from_record(job, remaining, replayed=True)

    # --- lookups ----------------------------------------------------------------------------

    def models(self) -> list[ModelInfo]:
        """Every configured model with its operations and price."""
        return self.registry.info()

    @property
    def config_problem(self) -> ConfigError | None:
        """What is wrong with the settings when opened with ``check_default=False``."""
        return self.registry.default_problem

    @property
    def default_model(self) -> str:
        """The model used when a request names none (``[defaults] model``, else the first)."""
        return self.registry.default_ref

    def model_for(self, operation: Operation, *preferred: str | None) -> str:
        """The model to use for ``operation`` when the user named none: the first
        ``preferred`` reference that can do it (a server's default, the model of the job
        being built on), else the default model if it can, else the first configured model
        that can. In memory: safe to call before acknowledging an interaction.

        Raises:
            InvalidRequestError: no configured model can do ``operation``.
        """
        return self.registry.model_for(operation, *preferred)

    def check_model(self, ref: str, operation: Operation) -> None:
        """Refuse, before anything is spent, a model the user named that is unknown or cannot
        do ``operation`` (in memory, like ``model_for``).

        Raises:
            UnknownModelError: not a configured model or alias.
            InvalidRequestError: it cannot do ``operation``.
        """
        self.registry.check_model(ref, operation)

    def serves(self, ref: str | None, operation: str) -> bool:
        """True when the reference (None: the default model) can do ``operation``."""
        return self.registry.serves(ref, operation)

    def max_input_bytes(self, frontend: str) -> int:
        """The largest input image ``frontend`` may pass: ``[images] max_input_bytes``, lowered
        by the front end's own cap (``[mcp] max_input_bytes``, ``[discord]
        max_attachment_bytes``)."""
        own = {
            "mcp": self.settings.mcp.max_input_bytes,
            "discord": self.settings.discord.max_attachment_bytes,
        }
        limit = self.settings.images.max_input_bytes
        return min(limit, own.get(frontend, limit))

    async def job(self, caller: Caller, job_id: str, *, shared: bool = False) -> JobRecord:
        """A job of the caller's; admins may read any, and so may anyone with ``shared``
        (for a front end that showed this job's result to the caller, e.g. a public Discord
        message). Reading never lets the caller spend or delete as the job's owner.

        Raises:
            NotFoundError: no such job, or not the caller's.
        """
        job = await self.store.job(job_id)
        if job is None or (job.user != caller.key and not (caller.is_admin or shared)):
            whose = "" if caller.is_admin else " of yours"  # an admin sees every user's jobs
            raise NotFoundError(f"no job {job_id!r}{whose}")
        return job

    async def wait_job(
        self, caller: Caller, job_id: str, *, timeout_s: float, shared: bool = False
    ) -> JobRecord:
        """``job``, once it has finished or ``timeout_s`` has passed (then still running).

        Waits on the database, not on this process: the job may be running in another process
        or on another host (MCP replicas, Discord shards sharing one PostgreSQL database). It
        looks again every 50 ms at first, then less often, up to once a second.

        Raises:
            NotFoundError: no such job, or not the caller's.
        """
        return await self._finished(lambda: self.job(caller, job_id, shared=shared), timeout_s)

    async def _finished(
        self, read: Callable[[], Awaitable[JobRecord]], timeout_s: float
    ) -> JobRecord:
        """``read()``'s job once its status in the database is no longer running, or after
        ``timeout_s``; in between only the status is read (one small query)."""
        job = await read()
        deadline = time.monotonic() + timeout_s
        pause = 0.05
        while job.status == "running" and (left := deadline - time.monotonic()) > 0:
            await asyncio.sleep(min(pause, left))
            pause = min(pause * 1.5, 1.0)
            if await self.store.job_status(job.job_id) != "running":
                job = await read()
        return job

    async def image(
        self, caller: Caller, image_id: str, *, shared: bool = False
    ) -> tuple[StoredImage, bytes]:
        """A stored image and its bytes: the caller's own, or any with ``shared`` (for a
        front end that showed the image to this caller, e.g. a public Discord result).

        Raises:
            NotFoundError: no such image, not the caller's, or lost (its file is missing or
                damaged).
        """
        found = await self.store.image(image_id)
        if found is None or (found[1] != caller.key and not shared):
            raise NotFoundError(f"no image {image_id!r} of yours")
        return found[0], await self.store.read(found[0])

    async def image_data(self, image: StoredImage) -> bytes:
        """The bytes of an image from a result or job record the caller was given, checked
        against its hash.

        Raises:
            NotFoundError: the image is lost (its file is missing or damaged).
        """
        return await self.store.read(image)

    async def input_from_image(
        self, caller: Caller, image_id: str, *, shared: bool = False
    ) -> InputImage:
        """A stored result as an input image (keeps the provider's id); ``shared`` as in
        ``image``."""
        stored, data = await self.image(caller, image_id, shared=shared)
        return _as_input(stored, data)

    async def load_input(
        self,
        data: bytes,
        *,
        what: str = "input image",
        max_bytes: int | None = None,
        caller: Caller | None = None,
    ) -> InputImage:
        """Check uploaded bytes by their size and header (no pixel is decoded yet: the job
        decodes them in full, off the event loop, once the caller is known to afford it).
        ``max_bytes``: a front end's ``max_input_bytes(frontend)``; by default ``[images]
        max_input_bytes``. With ``caller``, bytes equal to one of the caller's stored results
        are recognised as that result, as ``input_from_image`` would give it (keeping the
        provider's own image id, which Deepmode's upscale needs).

        Raises:
            InvalidRequestError: too large, not an image, or too many pixels.
        """
        limits = self.settings.images
        checked = await asyncio.to_thread(
            images.load_input,
            data,
            max_bytes=min(max_bytes or limits.max_input_bytes, limits.max_input_bytes),
            max_pixels=limits.max_pixels,
            what=what,
        )
        if caller is None:
            return checked
        digest = await asyncio.to_thread(_sha256, data)
        found = await self.store.result_with_bytes(caller.key, digest)
        return checked if found is None else _as_input(found, data)

    async def input_from(
        self,
        caller: Caller,
        value: str,
        read: Callable[[str], bytes],
        *,
        what: str = "input image",
        max_bytes: int | None = None,
    ) -> InputImage:
        """An input image named by a reference (``imagegate://images/{id}`` or a bare image
        id, the caller's own) or else by whatever ``read(value)`` returns (a file's bytes),
        recognised as one of the caller's results where it is one.

        Raises:
            NotFoundError: a reference to no image of the caller's.
            InvalidRequestError: from ``read``, or the bytes are no usable image.
        """
        image_id = image_reference(value)
        if image_id is None:
            try:
                data = read(value)
            except FileNotFoundError:
                return await self._input_by_bare_id(caller, value)
            return await self.load_input(data, what=what, max_bytes=max_bytes, caller=caller)
        return await self.input_from_image(caller, image_id)

    async def _input_by_bare_id(self, caller: Caller, value: str) -> InputImage:
        image_id = image_reference(value, bare=True)
        if image_id is None:
            raise InvalidRequestError(f"no such file: {value}")
        try:
            return await self.input_from_image(caller, image_id)
        except NotFoundError:
            raise NotFoundError(f"no such file, and no image {image_id!r} of yours") from None

    async def providers(self, *, balance: bool = False) -> list[ProviderInfo]:
        """Configured providers; with ``balance``, the account balance and the models served
        now, where the API has them."""
        out = []
        for name, ctx in self.registry.contexts.items():
            models = [m for m in self.registry.models.values() if m.ctx is ctx]
            shown, available = None, None
            if balance and models:
                try:
                    shown = await models[0].balance()
                except ImageGateError as exc:
                    shown = f"unavailable ({exc.message})"
                with contextlib.suppress(ImageGateError):
                    available = await models[0].available_models()
            out.append(
                ProviderInfo(
                    name=name,
                    kind=ctx.settings.kind,
                    base_url=ctx.base_url,
                    api_key_env=ctx.settings.api_key_env,
                    key_set=bool(ctx.api_key),
                    models=[m.model for m in models],
                    balance=shown,
                    available=available,
                    key_optional=bool(models) and models[0].key_optional,
                )
            )
        return out

    # --- quotas -----------------------------------------------------------------------------

    def policy(self, caller: Caller) -> Policy:
        """The caller's limits: the best applicable guild, role or MCP-client allowance wins."""
        quota = self.settings.quota
        overrides = [g.allowance for g in quota.guilds if g.guild_id == caller.guild_id]
        overrides += [r.allowance for r in quota.roles if r.role_id in caller.role_ids]
        overrides += [
            c.allowance
            for c in self.settings.mcp.clients
            if c.allowance is not None and caller.frontend == "mcp" and c.user == caller.user_id
        ]
        return Policy(
            allowance=max(overrides) if overrides else quota.allowance,
            period=quota.period,
            rate_per_minute=quota.rate_per_minute,
            max_in_flight=quota.max_in_flight,
            hold_ttl_s=quota.hold_ttl_s,  # only for holds without an owner (core.leases)
        )

    async def quota(self, caller: Caller) -> QuotaStatus:
        """The caller's remaining credits, allowance, grants, holds and reset time."""
        return await self.quotas.status(caller.key, self.policy(caller))

    async def grant(
        self, admin: Caller, user: Caller, credits: int, *, reason: str = ""
    ) -> QuotaStatus:
        """Add granted credits (negative to take back). Needs an admin caller."""
        _require_admin(admin)
        await self.quotas.grant(
            user.key,
            credits,
            reason=reason or f"granted by {admin.key}",
            policy=self.policy(user),
            actor=admin.key,
        )
        return await self.quota(user)

    async def set_allowance(
        self, admin: Caller, user: Caller, allowance: int | None
    ) -> QuotaStatus:
        """Override a user's per-period allowance (None: back to the policy's). Admin only."""
        _require_admin(admin)
        if allowance is not None and allowance < 0:
            raise InvalidRequestError("an allowance cannot be negative")
        await self.quotas.set_allowance(
            user.key, allowance, policy=self.policy(user), actor=admin.key
        )
        return await self.quota(user)

    async def history(self, caller: Caller, user: Caller, *, limit: int = 100) -> list[LedgerEntry]:
        """A user's ledger, newest first (their own, or anyone's for an admin)."""
        if user.key != caller.key:
            _require_admin(caller)
        return await self.quotas.history(user.key, limit=limit)

    # --- scope settings (per community: a Discord server, an MCP deployment, ...) ----------

    async def get_scope_settings(self, scope: str) -> dict[str, Any]:
        """The settings document of a scope such as ``discord:guild:1234``; ``{}`` if unset.

        Raises:
            InvalidRequestError: the scope is not of the form ``name:part[:part]``.
        """
        return await self.scopes.get(scope)

    async def all_scope_settings(self, prefix: str = "") -> dict[str, dict[str, Any]]:
        """Every stored settings document whose scope starts with ``prefix``."""
        return await self.scopes.all(prefix)

    async def set_scope_settings(
        self, admin: Caller, scope: str, values: dict[str, Any]
    ) -> dict[str, Any]:
        """Replace a scope's settings document (``{}`` clears it). Needs an admin caller.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            InvalidRequestError: a bad scope, or values that are not a small JSON object.
        """
        if not admin.is_admin:
            raise PermissionDeniedError("only an admin can change these settings")
        stored = await self.scopes.put(scope, values, by=admin.key)
        log.info("settings of %s changed by %s", scope, admin.key)
        return stored

    # --- a user's own jobs: history, showing again, deleting, cancelling --------------------

    async def share_job(self, caller: Caller, job_id: str, scope: str) -> None:
        """Record that the caller's job was shown publicly in ``scope`` (e.g.
        ``discord:guild:1234``), so others there may see it again (``shown_job``).

        Raises:
            NotFoundError: not the caller's job.
        """
        await self.job(caller, job_id)
        await self.store.share(job_id, check_scope(scope))

    async def shown_job(
        self, caller: Caller, job_id: str, scope: str | None = None, *, timeout_s: float = 0
    ) -> JobRecord:
        """A job whose result the caller may see again: their own, or one shown publicly in
        ``scope``; never a deleted one. With ``timeout_s``, once it has finished or that long
        has passed (then still running), waiting on the database as ``wait_job`` does: the
        job may be running in another process (another Discord shard or replica).

        Raises:
            NotFoundError: no such job here, or its result was deleted.
        """
        return await self._finished(lambda: self._shown_job(caller, job_id, scope), timeout_s)

    async def _shown_job(self, caller: Caller, job_id: str, scope: str | None) -> JobRecord:
        job = await self.store.job(job_id)
        visible = job is not None and (
            job.user == caller.key
            or (scope is not None and await self.store.is_shared(job_id, scope))
        )
        if job is None or not visible:
            raise NotFoundError(f"no job {job_id!r} that you can see here")
        if job.deleted:
            raise NotFoundError(f"the result of job {job_id} was deleted")
        return job

    async def delete_job(self, caller: Caller, job_id: str, *, moderator: bool = False) -> None:
        """Mark a job's result deleted (history and ``shown_job`` never show it again): its
        owner, or a ``moderator`` (a front end's judgement, e.g. Manage Messages).

        Raises:
            NotFoundError: no such job, or not the caller's (without ``moderator``).
        """
        job = await self.job(caller, job_id, shared=moderator)
        await self.store.mark_deleted(job.job_id, caller.key)

    # --- styles and personal preferences (core.personal) -----------------------------------

    async def styles(self, scope: str | None = None) -> list[Style]:
        """The operator's ``[styles.*]``, then those added in ``scope`` (a community such as
        ``discord:guild:1234``), each list by name."""
        own = [
            make_style(
                name,
                s.prompt,
                negative_prompt=s.negative_prompt,
                model=s.model,
                aspect=s.aspect,
                description=s.description,
            )
            for name, s in sorted(self.settings.styles.items())
        ]
        if scope is None:
            return own
        taken = {style.name for style in own}
        added = styles_from_document(scope, await self.scopes.get(styles_scope(scope)))
        return own + [style for style in added if style.name not in taken]

    async def style(self, name: str, scope: str | None = None) -> Style:
        """One style by name (see ``styles``).

        Raises:
            NotFoundError: no such style here.
        """
        wanted = name.strip().lower()
        for style in await self.styles(scope):
            if style.name == wanted:
                return style
        raise NotFoundError(f"there is no style called {name.strip()[:40]!r} here")

    async def add_style(self, admin: Caller, scope: str, style: Style) -> Style:
        """Add (or replace) a style of ``scope``. Its text passes the operator's banned words
        (front ends check their own lists first); its model must exist. Admin only.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            InvalidRequestError: a banned word, an operator's style of that name, too many
                styles, or a model that cannot generate.
            UnknownModelError: no such model.
        """
        if not admin.is_admin:
            raise PermissionDeniedError("only an admin can change styles")
        word = find_in_texts(
            (style.prompt.replace("{prompt}", " "), style.negative_prompt),
            self.settings.moderation.banned_words,
        )
        if word:
            raise InvalidRequestError(f"this service does not allow “{word}” in prompts")
        if style.name in self.settings.styles:
            raise InvalidRequestError(f"{style.name!r} is one of the service's own styles")
        if style.model:
            self.check_model(style.model, "generate")
        async with self._styles_lock:
            document = await self.scopes.get(styles_scope(scope))
            if style.name not in document and len(document) >= MAX_STYLES_PER_SCOPE:
                raise InvalidRequestError(
                    f"a server can have at most {MAX_STYLES_PER_SCOPE} styles"
                )
            document[style.name] = style.to_dict()
            await self.scopes.put(styles_scope(scope), document, by=admin.key)
        log.info("style %s of %s set by %s", style.name, scope, admin.key)
        return replace(style, source=scope)

    async def remove_style(self, admin: Caller, scope: str, name: str) -> None:
        """Remove a style added in ``scope``. Admin only.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            NotFoundError: ``scope`` has no style of that name.
        """
        if not admin.is_admin:
            raise PermissionDeniedError("only an admin can change styles")
        async with self._styles_lock:
            document = await self.scopes.get(styles_scope(scope))
            if document.pop(name.strip().lower(), None) is None:
                raise NotFoundError(f"this server has no style called {name.strip()[:40]!r}")
            await self.scopes.put(styles_scope(scope), document, by=admin.key)
        log.info("style %s of %s removed by %s", name, scope, admin.key)

    async def preferences(self, caller: Caller) -> Preferences:
        """The caller's own defaults (model, style, aspect, count, delivery)."""
        return Preferences.from_dict(await self.scopes.get(prefs_scope(caller.key)))

    async def set_preferences(self, caller: Caller, **changes: Any) -> Preferences:
        """Change the caller's own defaults; ``""`` clears one. A model or style is checked
        (``scope``: where styles are looked up, e.g. the Discord server).

        Raises:
            InvalidRequestError, UnknownModelError, NotFoundError: a value that cannot be used.
        """
        scope = changes.pop("scope", None)
        if changes.get("model"):
            self.check_model(changes["model"], "generate")
        if changes.get("style"):
            changes["style"] = (await self.style(changes["style"], scope)).name
        updated = (await self.preferences(caller)).changed(**changes)
        await self.scopes.put(prefs_scope(caller.key), updated.to_dict(), by=caller.key)
        return updated

    async def personalise(
        self,
        caller: Caller,
        operation: Operation,
        *,
        style: str | None = None,
        scope: str | None = None,
        prefer: str | None = None,
        **fields: Any,
    ) -> ImageRequest:
        """The request a user meant: options they left out (None) come from the style (named,
        else their preferred one), then their preferences, then ``prefer`` (a community's
        default model), then the service's default. The style's template wraps the prompt
        and its negative prompt is added. A preferred style or model that no longer exists
        is skipped.

        Raises:
            NotFoundError: the named ``style`` does not exist here.
            UnknownModelError, InvalidRequestError: as ``check_model`` and
                ``ImageRequest.checked``.
        """
        prefs = await self.preferences(caller)
        chosen = await self._chosen_style(style, prefs.style, scope)
        prompt, negative = fields.pop("prompt", None) or "", fields.pop("negative_prompt", None)
        if chosen is not None and operation != "upscale":
            prompt, negative = chosen.apply(prompt, negative)
        model = fields.pop("model", None)
        if model:
            self.check_model(model, operation)
        else:
            style_model = chosen.model if chosen else None
            model = self.model_for(operation, style_model, prefs.model, prefer)
        if operation == "generate":
            if fields.get("size") is None:
                fields["aspect_ratio"] = (
                    fields.get("aspect_ratio") or (chosen and chosen.aspect) or prefs.aspect
                )
            if fields.get("n") is None:  # an explicit bad count (0) is refused, not replaced
                fields["n"] = prefs.count or None
        return ImageRequest.checked(
            operation=operation,
            prompt=prompt or None,
            negative_prompt=negative,
            model=model,
            **fields,
        )

    async def _chosen_style(
        self, named: str | None, preferred: str | None, scope: str | None
    ) -> Style | None:
        if named:
            return await self.style(named, scope)
        if preferred:
            with contextlib.suppress(NotFoundError):
                return await self.style(preferred, scope)
        return None

    # --- tokens (dashboard sign-in: kind "admin"; MCP clients: kind "mcp") ---------------

    async def mint_token(
        self, admin: Caller, kind: str, user: str, *, label: str = ""
    ) -> tuple[str, TokenInfo]:
        """A new token of ``kind`` for ``user``: (plaintext, shown once and never stored; info).

        Raises:
            PermissionDeniedError: the caller is not an admin.
            InvalidRequestError: a bad kind, user or label.
        """
        _require_token_admin(admin)
        token, info = await self.tokens.mint(kind, user, label=label)
        log.info("%s token %s minted for %s by %s", kind, info.shown, user, admin.key)
        return token, info

    async def verify_token(self, kind: str, token: str) -> TokenInfo | None:
        """The active token of ``kind`` that ``token`` is, or None; never raises for bad input."""
        return await self.tokens.verify(kind, token)

    async def list_tokens(
        self, admin: Caller, kind: str | None = None, *, include_revoked: bool = False
    ) -> list[TokenInfo]:
        """Tokens (never their plaintext), oldest first. Admin only."""
        _require_token_admin(admin)
        return await self.tokens.list(kind, include_revoked=include_revoked)

    async def revoke_token(self, admin: Caller, kind: str, prefix: str) -> TokenInfo:
        """Revoke a token by its listed prefix. Admin only.

        Raises:
            PermissionDeniedError: the caller is not an admin.
            NotFoundError: no token of that kind has that prefix.
        """
        _require_token_admin(admin)
        info = await self.tokens.revoke(kind, prefix)
        log.info("%s token %s revoked by %s", kind, info.shown, admin.key)
        return info

    async def has_tokens(self, kind: str) -> bool:
        """Whether any active token of ``kind`` exists (an MCP server over HTTP then asks every
        request for one)."""
        return bool(await self.tokens.list(kind))

    async def mint_own_token(self, caller: Caller, *, label: str = "") -> tuple[str, TokenInfo]:
        """An MCP token that spends the caller's own credits (its user is ``caller.key``): what a
        Discord member mints for their agents, no admin involved. At most ``MAX_OWN_TOKENS``
        active at once.

        Raises:
            InvalidRequestError: the caller has that many already, or a bad label.
        """
        if len(await self.own_tokens(caller)) >= MAX_OWN_TOKENS:
            raise InvalidRequestError(
                f"you have {MAX_OWN_TOKENS} active tokens; revoke one you no longer use first"
            )
        token, info = await self.tokens.mint("mcp", caller.key, label=label)
        log.info("mcp token %s minted by %s for themselves", info.shown, caller.key)
        return token, info

    async def own_tokens(self, caller: Caller) -> list[TokenInfo]:
        """The caller's active MCP tokens (never their plaintext), oldest first."""
        return await self.tokens.list("mcp", user=caller.key)

    async def revoke_own_token(self, caller: Caller, prefix: str) -> TokenInfo:
        """Revoke one of the caller's MCP tokens by its listed prefix.

        Raises:
            NotFoundError: no such token of the caller's (someone else's looks the same).
        """
        found = await self.tokens.get("mcp", bare_prefix("mcp", prefix))
        if found is None or found.user != caller.key:
            raise NotFoundError(f"no token of yours with prefix {prefix[:40]!r}")
        info = await self.tokens.revoke("mcp", found.prefix)
        log.info("mcp token %s revoked by its owner %s", info.shown, caller.key)
        return info

    # --- dashboard sessions: short-lived tokens of kind "session", one per sign-in --------

    async def open_session(self, admin_token: str) -> tuple[str, datetime] | None:
        """Sign in with an admin token: (a new session token, when it expires), or None when
        the admin token is not valid. The session ends at ``[admin] session_ttl_s``, at
        sign-out, or when its admin token is revoked."""
        admin = await self.tokens.verify("admin", admin_token)
        if admin is None:
            return None
        session, info = await self.tokens.mint("session", admin.user, label=f"admin:{admin.prefix}")
        log.info("dashboard sign-in by %s with %s", admin.user, admin.shown)
        return session, info.created_at + timedelta(seconds=self.settings.admin.session_ttl_s)

    async def session(self, session_token: str) -> Caller | None:
        """The operator signed in with this session token (an admin caller), or None."""
        info = await self.tokens.verify("session", session_token)
        if info is None:
            return None
        age = self.clock() - info.created_at.timestamp()
        admin = await self.tokens.get("admin", info.label.removeprefix("admin:"))
        if age > self.settings.admin.session_ttl_s or admin is None or not admin.active:
            return None
        return Caller(frontend="admin", user_id=admin.prefix, is_admin=True)

    async def close_session(self, session_token: str) -> None:
        """Sign out: the session token stops working (nothing happens for an unknown one)."""
        info = await self.tokens.verify("session", session_token)
        if info is not None:
            await self.tokens.revoke("session", info.prefix)

    # --- reports (operators: the dashboard, `imagegate report`, alerts) --------------------

    async def usage(self, admin: Caller, *, days: int = 30) -> Usage:
        """Credits per day and model, jobs, failure and refund rates, top users, for the last
        ``days`` UTC days (today included). Admin only.

        Raises:
            InvalidRequestError: ``days`` is not 1-366.
        """
        _require_reader(admin)
        if not 1 <= days <= 366:
            raise InvalidRequestError("the range must be 1 to 366 days")
        return await self.reports.usage(days)

    async def jobs_in_flight(self, admin: Caller) -> list[JobSummary]:
        """Jobs running now, oldest first. Admin only."""
        _require_reader(admin)
        return await self.reports.in_flight()

    async def user_jobs(self, admin: Caller, user: str, *, limit: int = 50) -> list[JobSummary]:
        """A user's jobs (``frontend:id``), newest first. Admin only."""
        _require_reader(admin)
        return await self.reports.user_jobs(user, limit=limit)

    async def recent_images(self, admin: Caller, *, limit: int = 24) -> list[ImageSummary]:
        """The newest results of all users, newest first. Admin only."""
        _require_reader(admin)
        return await self.reports.recent_images(limit=limit)

    async def thumbnail(
        self, caller: Caller, image_id: str, *, shared: bool = False, edge: int = 256
    ) -> tuple[bytes, str]:
        """A small copy of a stored image (bytes, MIME), made once and cached on disk; who may
        see it as for ``image``.

        Raises:
            NotFoundError: no such image, not the caller's, or its file is gone.
        """
        found = await self.store.image(image_id)
        if found is None or (found[1] != caller.key and not shared):
            raise NotFoundError(f"no image {image_id!r} of yours")
        if found[0].lost:  # a lost image is never served, not even as a thumbnail
            raise NotFoundError(f"image {image_id!r} is lost ({found[0].lost})")
        try:
            return await asyncio.to_thread(self.store.thumbnail_sync, found[0], edge)
        except OSError:
            raise NotFoundError(f"image {image_id!r} is no longer stored") from None

    async def provider_runways(self, admin: Caller) -> list[ProviderRunway]:
        """Each provider's balance, where its API has one, and its runway at the last 7 days'
        burn. Balances are asked for at most every ``[admin] balance_refresh_s``. Admin only."""
        _require_reader(admin)
        return await self._runways()

    async def digest(self, admin: Caller, *, days: int = 7) -> Digest:
        """The usage of the last ``days`` days, jobs running now and provider runways."""
        usage = await self.usage(admin, days=days)
        return Digest(
            generated_at=datetime.fromtimestamp(self.clock(), UTC),
            usage=usage,
            in_flight=len(await self.reports.in_flight()),
            providers=await self._runways(),
        )

    async def check_alerts(self, sink: str) -> list[Alert]:
        """The ``[alerts]`` conditions that hold now and were not handed to ``sink`` yet today
        (UTC): each reaches each sink once a day, however many processes share the database.
        The service logs them itself (sink ``LOG_SINK``, see ``open``); a front end that posts
        them somewhere checks with a sink of its own (the bot: ``"discord"``)."""
        found = await self._runway_alerts() + await self._failure_alerts()
        now_ms = int(self.clock() * 1000)
        today = datetime.fromtimestamp(self.clock(), UTC).strftime("%Y-%m-%d")
        return [a for a in found if await self.alert_book.claim(f"{sink}:{a.key}", today, now_ms)]

    async def weekly_digest_due(self) -> bool:
        """True once per ISO week when ``[alerts] weekly_digest`` is on: post the digest now."""
        if not self.settings.alerts.weekly_digest:
            return False
        year, week, _ = datetime.fromtimestamp(self.clock(), UTC).isocalendar()
        return await self.alert_book.claim(
            "weekly_digest", f"{year}-W{week:02d}", int(self.clock() * 1000)
        )

    async def _runway_alerts(self) -> list[Alert]:
        limit = self.settings.alerts.runway_days
        if not limit:
            return []
        return [
            Alert(
                f"runway:{p.provider}",
                f"provider {p.provider} runs dry in about {p.runway_days:.1f} day(s):"
                f" {p.balance} left, spending {p.burn_per_day:.3g} {p.unit}/day over the last"
                f" 7 days (alert below {limit:g} days)",
            )
            for p in await self._runways()
            if p.runway_days is not None and p.runway_days < limit
        ]

    async def _failure_alerts(self) -> list[Alert]:
        cfg = self.settings.alerts
        if not cfg.failure_rate:
            return []
        since = int(self.clock() * 1000) - 3_600_000
        return [
            Alert(
                f"failure_rate:{model}",
                f"model {model}: {failed} of {count} jobs failed in the last hour"
                f" ({failed / count:.0%}; alert above {cfg.failure_rate:.0%})",
            )
            for model, count, failed in await self.reports.failures_by_model(since)
            if count >= cfg.min_jobs and failed / count > cfg.failure_rate
        ]

    async def _runways(self) -> list[ProviderRunway]:
        now_ms = int(self.clock() * 1000)
        credits = await self.reports.credits_by_provider(now_ms - 7 * 86_400_000)
        names = list(self.registry.contexts)
        await asyncio.gather(*(self._refresh_balance(name, now_ms) for name in names))
        out = []
        for name in names:
            ctx = self.registry.contexts[name]
            runway = ProviderRunway(
                provider=name, kind=ctx.settings.kind, balance=None, credits_7d=credits.get(name, 0)
            )
            error = self._balance_errors.get(name)
            try:
                amount, unit, burn, days, taken = await self.reports.runway(name)
            except LookupError:
                runway.balance = error[1] if error else None
            else:
                runway.balance = amount_text(amount, unit)
                runway.amount, runway.unit, runway.burn_per_day = amount, unit, burn
                runway.runway_days = days
                runway.checked_at = datetime.fromtimestamp(taken / 1000, UTC)
            out.append(runway)
        return out

    async def _refresh_balance(self, name: str, now_ms: int) -> None:
        """Ask the provider for its balance and keep a snapshot, unless one is recent enough."""
        every_ms = int(self.settings.admin.balance_refresh_s * 1000)
        last = await self.reports.last_balance_at(name)
        failed = self._balance_errors.get(name)
        if (last is not None and now_ms - last < every_ms) or (
            failed and now_ms - failed[0] < every_ms
        ):
            return
        model = next((m for m in self.registry.models.values() if m.ctx.name == name), None)
        if model is None:
            return
        try:
            async with asyncio.timeout(15):
                text = await model.balance()
        except (ImageGateError, TimeoutError) as exc:
            reason = exc.message if isinstance(exc, ImageGateError) else "no answer"
            self._balance_errors[name] = (now_ms, f"unavailable ({reason})")
            return
        parsed = parse_balance(text)
        if text is not None and parsed is None:
            self._balance_errors[name] = (now_ms, text)
        if parsed is not None:
            self._balance_errors.pop(name, None)
            await self.reports.record_balance(name, *parsed)

    # --- housekeeping -----------------------------------------------------------------------

    async def recover(self) -> int:
        """Release the holds of processes whose lease lapsed (and expired owner-less ones),
        finish their jobs as interrupted, and forget their leases. Returns holds released."""
        released = await self.quotas.sweep(instance=self.owner)
        await self.store.interrupt_lapsed(self.owner)
        await self.leases.forget_lapsed()
        if released:
            log.info("released %d abandoned hold(s)", released)
        return released

    async def _sweep_forever(self) -> None:
        await asyncio.sleep(self.settings.quota.sweep_interval_s)
        await _repeat(self.recover, self.settings.quota.sweep_interval_s, "hold sweeper")

    async def _log_alerts_forever(self) -> None:
        async def log_due() -> None:
            for alert in await self.check_alerts(LOG_SINK):
                log.warning("alert: %s", alert.message)

        await _repeat(log_due, self.settings.alerts.check_interval_s, "alert check")


async def _repeat(step: Callable[[], Awaitable[object]], every_s: float, what: str) -> None:
    """``step()`` now and then every ``every_s`` seconds, until cancelled; a failure (a
    transient database error) is logged and the next round runs anyway."""
    while True:
        try:
            await step()
        except Exception:
            log.exception("%s failed", what)
        await asyncio.sleep(every_s)


class _LocalJob:
    """A job's work running in this process, as its own task (a caller's own cancellation
    stops it; ``cancel`` sets ``stop``, which the work obeys, keeping the images that
    arrived). ``closed`` is set once the job's outcome is recorded."""

    def __init__(self, work: Coroutine[Any, Any, ImageResult], stop: asyncio.Event) -> None:
        self.task = asyncio.ensure_future(work)
        self.stop = stop  # the work watches it (see ``ImageService.cancel``)
        self.closed = asyncio.Event()

    async def result(self) -> ImageResult:
        """The job's result; a cancelled job raises ``JobCancelledError`` (the caller's own
        cancellation still raises ``CancelledError``, and stops the job too)."""
        try:
            return await self.task
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if self.task.cancelled() and current is not None and not current.cancelling():
                raise JobCancelledError("the job was cancelled on request") from None
            raise


def _page_size(limit: int) -> int:
    if not 1 <= limit <= 100:
        raise InvalidRequestError("limit must be between 1 and 100")
    return limit


def _expect(request: ImageRequest, operations: tuple[str, ...]) -> None:
    if request.operation not in operations:
        raise InvalidRequestError(
            f"operation {request.operation!r} is not one of: {', '.join(operations)}"
        )


def _as_input(stored: StoredImage, data: bytes) -> InputImage:
    """A stored result (with its bytes) as an input image that remembers where it came from."""
    return InputImage(
        data=data,
        mime=stored.mime,
        width=stored.width,
        height=stored.height,
        source_image_id=stored.id,
        provider=stored.model.partition(":")[0],
        provider_image_id=stored.provider_image_id,
    )


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def _queue_wait(ticket: Ticket, job: dict[str, Any], progress: Progress | None) -> None:
    """Until ``ticket`` may run; with ``progress``, report each new queue position (moves
    within ``_QUEUE_REPORT_INTERVAL_S`` of a report are folded into the next one)."""
    shown = 0
    while not ticket.ready:
        position = ticket.position
        if progress is None or position == shown:
            await ticket.wait(follow=progress is not None)
            continue
        shown = position
        info = {**job, "position": position, "limit": ticket.queue.limit}
        starts_in = ticket.queue.start_estimate_s(position)
        if starts_in is not None:
            info["starts_in_s"] = round(starts_in, 1)
        await _tell(progress, "queued", info)
        await ticket.wait(timeout=_QUEUE_REPORT_INTERVAL_S)


async def _unless(cancel: asyncio.Event, work: Coroutine[Any, Any, None]) -> None:
    """Run ``work`` unless ``cancel`` is set first: then ``work`` is cancelled and the job
    ends as cancelled."""
    task = asyncio.ensure_future(work)
    stop = asyncio.ensure_future(cancel.wait())
    try:
        await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stop.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if cancel.is_set() and not (task.done() and not task.cancelled()):
        raise JobCancelledError("the job was cancelled while it waited in the queue")
    task.result()


async def _tell(progress: Progress | None, stage: str, info: dict[str, Any]) -> None:
    """Call a front end's progress callback; its failure must not fail the job."""
    if progress is None:
        return
    try:
        await progress(stage, info)
    except Exception as exc:  # noqa: BLE001 - progress is advisory
        log.info("progress callback failed at %s: %s", stage, type(exc).__name__)


def _require_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDeniedError("only an admin can change quotas")


def _require_reader(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDeniedError("only an admin can read usage reports")


def _require_token_admin(caller: Caller) -> None:
    if not caller.is_admin:
        raise PermissionDeniedError("only an admin can manage tokens")


def _hash(user: str, model: str, record: dict[str, Any]) -> str:
    payload = json.dumps({"user": user, "model": model, "request": record}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def _plans(models: list[ImageModel], request: ImageRequest) -> list[tuple[ImageModel, Plan]]:
    """The first model's plan (its refusal is the caller's error) and each fallback's that
    can serve the request."""
    chain = [(models[0], models[0].plan(request))]
    for model in models[1:]:
        with contextlib.suppress(InvalidRequestError):
            chain.append((model, model.plan(request)))
    return chain


def _shortfall(
    error: ImageGateError | None, made: int, asked: int, charged: int, hold: Hold
) -> list[str]:
    """The warning for a job that delivered fewer images than asked (cancelled or failed part
    way), saying what was charged; none for a complete job."""
    if isinstance(error, JobCancelledError):
        return [
            f"cancelled after {made} of {asked} images: {charged} credit(s)"
            f" charged for those, {hold.amount - charged} released"
        ]
    if error is not None:
        return [
            f"only {made} of {asked} images were made ({error.message});"
            " you were charged only for those"
        ]
    return []


def _model_of(delivered: list[Delivered]) -> str:
    refs = list(dict.fromkeys(d.model.ref for d in delivered))
    return ", ".join(refs)


def default_cli_user() -> str:
    """``cli:<login name>``."""
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "operator"
    return f"cli:{name}"
