"""ImageService end to end with the placeholder provider: determinism, every edit mode,
refunds on failure and cancellation, idempotent replays, ownership, and restart recovery
(the job-store and money tests on both database backends)."""

from __future__ import annotations

import asyncio
import io

import pytest
from PIL import Image, ImageChops

from core import (
    Caller,
    ImageRequest,
    ImageService,
    InvalidRequestError,
    NotFoundError,
    QuotaExceededError,
    SpendLimitError,
    UnknownModelError,
)
from core.errors import ProviderUnavailableError
from tests.conftest import make_settings, png_bytes

ALICE = Caller(frontend="cli", user_id="alice")
BOB = Caller(frontend="cli", user_id="bob")


@pytest.fixture
async def on_both(tmp_path, backend):
    """An ``ImageService`` on each database backend in turn (tests/conftest.py ``backend``)."""
    svc = await ImageService.open(make_settings(tmp_path, database=backend), sweeper=False)
    yield svc
    await svc.aclose()


def _pixels(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


async def test_generate_is_deterministic_for_prompt_seed_and_size(service):
    request = ImageRequest(prompt="a red fox", n=3, seed=5, size=(640, 384))
    first = await service.generate(ALICE, request)
    second = await service.generate(ALICE, request)
    assert [i.sha256 for i in first.images] == [i.sha256 for i in second.images]
    assert len({i.sha256 for i in first.images}) == 3
    assert all((i.width, i.height, i.mime) == (640, 384, "image/png") for i in first.images)
    assert [i.seed for i in first.images] == [5, 6, 7]
    assert first.credits_charged == 3 and first.credits_remaining == 47


async def test_aspect_ratio_sets_the_shape(service):
    result = await service.generate(ALICE, ImageRequest(prompt="wide", aspect_ratio="16:9"))
    image = result.images[0]
    assert image.width > image.height and abs(image.width / image.height - 16 / 9) < 0.05


async def test_inpaint_changes_only_the_masked_region(service):
    source = await service.load_input(png_bytes((128, 96), (10, 120, 200)))
    mask_img = Image.new("L", (128, 96), 0)
    mask_img.paste(255, (32, 24, 96, 72))
    buf = io.BytesIO()
    mask_img.save(buf, format="PNG")
    mask = await service.load_input(buf.getvalue(), what="mask")
    result = await service.edit(
        ALICE, ImageRequest(operation="inpaint", prompt="a hat", image=source, mask=mask, seed=1)
    )
    out = _pixels(result.images[0].path.read_bytes())
    diff = ImageChops.difference(out, _pixels(source.data)).convert("L")
    changed = diff.point(lambda v: 255 if v else 0)
    outside = ImageChops.multiply(changed, Image.eval(mask_img, lambda v: 255 - v))
    assert outside.getbbox() is None
    assert changed.getbbox() is not None


async def test_inpaint_reads_an_alpha_mask_the_openai_way(service):
    source = await service.load_input(png_bytes((64, 64), (0, 0, 0)))
    alpha = Image.new("RGBA", (64, 64), (0, 0, 0, 255))
    alpha.paste((0, 0, 0, 0), (0, 0, 32, 64))
    buf = io.BytesIO()
    alpha.save(buf, format="PNG")
    mask = await service.load_input(buf.getvalue(), what="mask")
    result = await service.edit(
        ALICE, ImageRequest(operation="inpaint", prompt="x", image=source, mask=mask, seed=3)
    )
    out = _pixels(result.images[0].path.read_bytes())
    assert out.crop((32, 0, 64, 64)).getextrema() == ((0, 0), (0, 0), (0, 0))
    assert out.crop((0, 0, 32, 64)).getextrema() != ((0, 0), (0, 0), (0, 0))


async def test_mask_of_the_wrong_size_is_refused_before_any_charge(service):
    source = await service.load_input(png_bytes((64, 64)))
    mask = await service.load_input(png_bytes((32, 32), 255, mode="L"), what="mask")
    with pytest.raises(InvalidRequestError, match="same size"):
        await service.edit(
            ALICE, ImageRequest(operation="inpaint", prompt="x", image=source, mask=mask)
        )
    assert (await service.quota(ALICE)).remaining == 50


async def test_placeholder_refuses_options_before_any_charge(service):
    """It takes no provider options: one sent is an error naming it, never silently dropped."""
    request = ImageRequest(operation="generate", prompt="x", options={"steps_x": 3})
    with pytest.raises(InvalidRequestError, match="steps_x"):
        await service.generate(ALICE, request)
    assert (await service.quota(ALICE)).remaining == 50


@pytest.mark.parametrize("mode", ["variation", "sketch", "background", "avatar"])
async def test_every_edit_mode_returns_an_image_of_the_input_size(service, mode):
    source = await service.load_input(png_bytes((80, 60)))
    result = await service.edit(ALICE, ImageRequest(operation=mode, prompt="p", image=source))
    assert (result.images[0].width, result.images[0].height) == (80, 60)


async def test_upscale_multiplies_the_size(service):
    source = await service.load_input(png_bytes((50, 40)))
    result = await service.upscale(ALICE, ImageRequest(operation="upscale", image=source, scale=4))
    assert (result.images[0].width, result.images[0].height) == (200, 160)


async def test_unknown_model_and_bad_input_cost_nothing(service):
    with pytest.raises(UnknownModelError, match="placeholder:default"):
        await service.generate(ALICE, ImageRequest(prompt="x", model="nope:x"))
    with pytest.raises(InvalidRequestError):
        await service.load_input(b"not an image at all")
    truncated = await service.load_input(png_bytes((300, 300))[:200])  # the header is intact
    with pytest.raises(InvalidRequestError, match="input image is damaged"):
        await service.edit(ALICE, ImageRequest(operation="variation", image=truncated))
    assert (await service.quota(ALICE)).remaining == 50
    assert await service.history(ALICE, ALICE) == []  # no hold, no job


async def test_decompression_bomb_is_refused(service):
    bomb = png_bytes((10000, 10000), 0, mode="1")
    with pytest.raises(InvalidRequestError, match="pixels"):
        await service.load_input(bomb)


async def test_a_result_over_the_pixel_limit_is_refused_before_anything_is_spent(tmp_path):
    settings = make_settings(tmp_path, images={"max_pixels": 300 * 300})
    async with await ImageService.open(settings, sweeper=False) as svc:
        source = await svc.load_input(png_bytes((200, 200)))
        with pytest.raises(InvalidRequestError, match="400x400 image .* limit is 90,000"):
            await svc.upscale(ALICE, ImageRequest(operation="upscale", image=source, scale=2))
        with pytest.raises(InvalidRequestError, match="512x512 image .* limit is 90,000"):
            await svc.generate(ALICE, ImageRequest(prompt="x"))  # the placeholder's default
        assert await svc.history(ALICE, ALICE) == []
        made = await svc.generate(ALICE, ImageRequest(prompt="x", size=(256, 256)))
        assert made.credits_charged == 1


async def test_quota_exceeded_refuses_before_the_provider(tmp_path, backend):
    async with await ImageService.open(
        make_settings(tmp_path, database=backend, quota={"allowance": 2}), sweeper=False
    ) as svc:
        with pytest.raises(QuotaExceededError, match="needs 3"):
            await svc.generate(ALICE, ImageRequest(prompt="x", n=3))
        assert (await svc.quota(ALICE)).remaining == 2


async def test_provider_failure_is_refunded_and_recorded(on_both, monkeypatch):
    model = on_both.registry.models["placeholder:default"]

    async def boom(plan, count, deadline):
        raise ProviderUnavailableError("placeholder is down", provider="placeholder")

    monkeypatch.setattr(model, "do_generate", boom)
    on_both.orchestrator.base_delay_s = 0.001
    with pytest.raises(ProviderUnavailableError):
        await on_both.generate(ALICE, ImageRequest(prompt="x", n=2))
    status = await on_both.quota(ALICE)
    assert (status.remaining, status.held, status.in_flight) == (50, 0, 0)
    assert await on_both.quotas.check_ledger() == []


async def test_cancellation_releases_the_hold(on_both, monkeypatch):
    model = on_both.registry.models["placeholder:default"]
    started = asyncio.Event()

    async def slow(plan, count, deadline):
        started.set()
        await asyncio.sleep(60)

    monkeypatch.setattr(model, "do_generate", slow)
    task = asyncio.create_task(on_both.generate(ALICE, ImageRequest(prompt="x", n=2)))
    await started.wait()
    assert (await on_both.quota(ALICE)).held == 2
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    status = await on_both.quota(ALICE)
    assert (status.remaining, status.held) == (50, 0)


async def test_replayed_idempotency_key_is_not_charged_twice(on_both):
    request = ImageRequest(prompt="x", n=2, seed=1)
    first = await on_both.generate(ALICE, request, idempotency_key="interaction-1")
    again = await on_both.generate(ALICE, request, idempotency_key="interaction-1")
    assert again.replayed and again.job_id == first.job_id
    assert (await on_both.quota(ALICE)).remaining == 48


async def test_images_and_jobs_belong_to_their_owner(on_both):
    result = await on_both.generate(ALICE, ImageRequest(prompt="mine"))
    image_id = result.images[0].id
    stored, data = await on_both.image(ALICE, image_id)
    assert data == stored.path.read_bytes()
    with pytest.raises(NotFoundError):
        await on_both.image(BOB, image_id)
    with pytest.raises(NotFoundError):
        await on_both.job(BOB, result.job_id)
    assert (await on_both.job(ALICE, result.job_id)).images[0].id == image_id


async def test_rerun_after_restart_reuses_settings_with_a_new_seed(tmp_path, backend):
    settings = make_settings(tmp_path, database=backend)
    async with await ImageService.open(settings, sweeper=False) as svc:
        source = await svc.load_input(png_bytes((72, 72)))
        first = await svc.edit(
            ALICE, ImageRequest(operation="variation", prompt="p", image=source, seed=9)
        )
    async with await ImageService.open(settings, sweeper=False) as svc:
        again = await svc.rerun(ALICE, first.job_id)
        assert again.operation == "variation"
        assert (again.images[0].width, again.images[0].height) == (72, 72)
        assert again.job_id != first.job_id


async def test_a_shown_result_can_be_built_on_by_someone_else_who_pays(service):
    made = await service.generate(ALICE, ImageRequest(prompt="a fox", n=2, seed=3))
    with pytest.raises(NotFoundError):
        await service.rerun(BOB, made.job_id)  # not shown to bob: not his to read
    again = await service.rerun(BOB, made.job_id, shared=True)
    assert len(again.images) == 2 and again.credits_charged == 2
    assert [i.seed for i in again.images] != [3, 4]  # a reroll: a new seed
    varied = await service.from_result(BOB, made.job_id, 2, "variation", shared=True, n=1)
    assert len(varied.images) == 1
    upscaled = await service.from_result(BOB, made.job_id, 1, "upscale", shared=True)
    assert upscaled.images[0].width > made.images[0].width
    assert (await service.quota(ALICE)).remaining == 48  # alice paid only for her own job
    assert (await service.quota(BOB)).remaining == 50 - 2 - 1 - 1
    with pytest.raises(InvalidRequestError, match="no image 3"):
        await service.from_result(BOB, made.job_id, 3, "upscale", shared=True)

    source = await service.load_input(png_bytes())
    edit = await service.edit(ALICE, ImageRequest(operation="variation", prompt="p", image=source))
    with pytest.raises(InvalidRequestError, match="only the person who made this edit"):
        await service.rerun(BOB, edit.job_id, shared=True)  # it would reuse alice's upload
    assert (await service.quota(BOB)).remaining == 46


async def test_the_model_for_an_operation_is_chosen_in_core(tmp_path):
    settings = make_settings(
        tmp_path,
        providers={
            "oa": {"kind": "openai", "models": ["gpt-image-1"]},
            "placeholder": {"kind": "placeholder"},
        },
        defaults={"model": "oa:gpt-image-1"},
    )
    async with await ImageService.open(settings, sweeper=False) as svc:
        assert svc.default_model == "oa:gpt-image-1"
        assert svc.model_for("generate") == "oa:gpt-image-1"
        assert svc.model_for("upscale") == "placeholder:default"  # the default cannot upscale
        assert svc.model_for("upscale", None, "oa:gpt-image-1") == "placeholder:default"
        assert svc.model_for("generate", "placeholder:default") == "placeholder:default"
        with pytest.raises(UnknownModelError):
            svc.check_model("nope:x", "generate")
        with pytest.raises(InvalidRequestError, match="cannot do upscale"):
            svc.check_model("oa:gpt-image-1", "upscale")
        svc.check_model("placeholder:default", "upscale")


def _two_price_settings(tmp_path):
    """Two placeholder models, 1 and 3 credits per image, and an alias falling back 1 -> 3."""
    return make_settings(
        tmp_path,
        providers={
            "cheap": {"kind": "placeholder", "models": ["default"]},
            "dear": {"kind": "placeholder", "models": ["default"]},
        },
        aliases={"both": ["cheap:default", "dear:default"]},
        pricing={"default": 1, "models": {"dear:default": 3}},
        quota={"allowance": 10},
    )


async def test_estimate_prices_the_chain_and_spends_nothing(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(
        "core.providers.placeholder.PlaceholderImageModel.do_generate",
        lambda *a: calls.append(a),
    )
    async with await ImageService.open(_two_price_settings(tmp_path), sweeper=False) as service:
        cheap = await service.estimate(ALICE, ImageRequest(prompt="x", n=2, model="cheap:default"))
        assert (cheap.credits, cheap.price_per_image, cheap.credits_remaining) == (2, 1, 10)
        assert cheap.affordable and cheap.warnings == []
        # A fallback may make the images, so the job can cost the dearest price of its chain.
        both = await service.estimate(
            ALICE, ImageRequest(prompt="x", n=4, model="both", negative_prompt="blur")
        )
        assert (both.model, both.credits, both.price_per_image) == ("cheap:default", 12, 3)
        assert not both.affordable
        assert any("negative_prompt is ignored" in w for w in both.warnings)
        assert any("12" in w and "10 left" in w for w in both.warnings)
        with pytest.raises(UnknownModelError):
            await service.estimate(ALICE, ImageRequest(prompt="x", model="nope:x"))
        # With an input image a real job checks the balance before any image work; a dry run
        # checks the image and reports the balance as a warning instead.
        source = await service.load_input(png_bytes())
        edit = ImageRequest(operation="variation", image=source, n=4, model="dear:default")
        with pytest.raises(QuotaExceededError):
            await service.edit(ALICE, edit)
        priced = await service.estimate(ALICE, edit)
        assert priced.credits == 12 and any("10 left" in w for w in priced.warnings)
        status = await service.quota(ALICE)
    assert calls == [] and (status.remaining, status.held) == (10, 0)


async def test_max_credits_refuses_before_reserving(tmp_path):
    async with await ImageService.open(_two_price_settings(tmp_path), sweeper=False) as service:
        request = ImageRequest(prompt="x", n=2, model="dear:default")
        with pytest.raises(SpendLimitError, match="up to 6 credits.*max_credits 5") as caught:
            await service.generate(ALICE, request, max_credits=5)
        assert (caught.value.price, caught.value.limit, caught.value.code) == (
            6,
            5,
            "over_max_credits",
        )
        assert (await service.quota(ALICE)).remaining == 10
        assert await service.history(ALICE, ALICE) == []
        made = await service.generate(ALICE, request, max_credits=6)
        assert made.credits_charged == 6


async def test_a_job_running_in_another_process_is_awaited_through_the_database(
    tmp_path, backend, monkeypatch
):
    settings = make_settings(tmp_path, database=backend)
    async with (
        await ImageService.open(settings, sweeper=False) as runner,
        await ImageService.open(settings, sweeper=False) as other,
    ):
        started, release = asyncio.Event(), asyncio.Event()
        model = runner.registry.models["placeholder:default"]
        original = model.do_generate

        async def held(*args, **kwargs):
            started.set()
            await release.wait()
            return await original(*args, **kwargs)

        monkeypatch.setattr(model, "do_generate", held)
        job = asyncio.create_task(runner.generate(ALICE, ImageRequest(prompt="elsewhere")))
        await started.wait()
        [(job_id,)] = await other.db.fetchall("SELECT job_id FROM job")
        assert (await other.wait_job(ALICE, job_id, timeout_s=0)).status == "running"
        waiting = asyncio.create_task(other.wait_job(ALICE, job_id, timeout_s=60))
        release.set()
        done = await waiting
        assert done.status == "succeeded" and len(done.images) == 1
        assert (await job).job_id == job_id
        with pytest.raises(NotFoundError):
            await other.wait_job(BOB, job_id, timeout_s=0)
