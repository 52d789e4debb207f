"""The contract every adapter keeps, checked against its emulator through ``ImageService``.

Each declared operation delivers decodable images; undeclared ones are refused before any
call; counts at and beyond ``max_images_per_call`` are batched; every request field is mapped,
warned about or rejected; errors are classified (retried or not) and never charged; API keys
never reach an error message or a log line.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from core import (
    Caller,
    ContentRejectedError,
    ImageRequest,
    ImageService,
    InvalidRequestError,
    parse_settings,
)
from core.errors import (
    ProviderAuthError,
    ProviderRejectedError,
    ProviderResponseError,
    ProviderUnavailableError,
)
from core.providers import ADAPTERS, BUILTIN, DEFAULT_BASE_URLS, ProviderOptions
from core.providers import KINDS as KINDS_ALL
from core.types import OPERATIONS
from tests.emulators import KINDS as EMULATOR_KINDS
from tests.emulators import Fault, create_emulator

from .conftest import KINDS, adapter, decode, half_mask, input_image, png

FILL = "black-forest-labs/FLUX.1-Fill-dev"
VARIANTS = [(kind, spec.model) for kind, spec in KINDS.items()] + [
    ("nebulablock", FILL),
    ("nebulablock", "stabilityai/stable-diffusion-xl-base-1.0"),
    ("openai", "gpt-image-1"),
    ("openai", "dall-e-3"),
    ("hive_v3", "stabilityai/sdxl"),
]
IDS = [f"{kind}:{model}" for kind, model in VARIANTS]
OPTIONAL_FIELDS = {
    "prompt": "sharper, please",
    "negative_prompt": "blurry, low quality",
    "seed": 1234,
    "steps": 23,  # not a default of any adapter (20 is ComfyUI's and the WebUI's)
    "guidance": 5.0,
    "strength": 0.4,
    "scale": 3,
}


def test_every_adapter_is_configurable_and_in_this_suite():
    """What docs/providers.md "Adding a provider" asks for: one class per kind, declaring its
    kind, base URL, capabilities and options, with an emulator and an entry in KINDS."""
    assert tuple(BUILTIN) == KINDS_ALL and len(set(ADAPTERS)) == len(ADAPTERS)
    for kind, cls in BUILTIN.items():
        assert cls.kind == kind and DEFAULT_BASE_URLS[kind] == cls.default_base_url
        assert issubclass(cls.Options, ProviderOptions) and cls.tunes <= {"steps", "guidance"}
        settings = parse_settings({"providers": {"p": {"kind": kind}}})
        assert settings.providers["p"].resolved_base_url() == cls.default_base_url.rstrip("/")
    assert set(KINDS) == set(BUILTIN) - {"placeholder"}  # each has an emulator and a spec
    assert {spec.emulator for spec in KINDS.values()} <= set(EMULATOR_KINDS)


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
def test_capabilities_are_well_formed(kind, model):
    caps = adapter(kind, model).capabilities
    assert caps.operations and caps.operations <= set(OPERATIONS)
    assert 1 <= caps.max_images_per_call <= 10
    assert caps.description


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
def test_undeclared_operations_are_refused_by_plan(kind, model):
    model_ = adapter(kind, model)
    for op in set(OPERATIONS) - model_.capabilities.operations:
        with pytest.raises(InvalidRequestError, match="serves"):
            model_.plan(_request(op, "x"))


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
def test_unknown_provider_options_are_refused_with_the_allowed_ones(kind, model):
    model_ = adapter(kind, model, name="mine")
    op = _main_op(model_)
    other = _request(op, "mine", provider_options={"someone_else": {"anything": 1}})
    model_.plan(other)  # options for another provider are not ours to check
    for key in (kind, "mine"):
        bad = _request(op, "mine", provider_options={key: {"no_such_option": True}})
        with pytest.raises(InvalidRequestError, match="no_such_option.*allowed"):
            model_.plan(bad)


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
async def test_every_declared_operation_delivers_decodable_images(harness, kind, model):
    h = await harness(kind, model=model)
    ops = h.service.registry.models[h.ref].capabilities.operations
    for op in sorted(ops):
        request = await _live_request(h, op)
        result = await h.run(request)
        assert len(result.images) == 1 and result.credits_charged == 1, op
        stored, data = await h.service.image(h.caller, result.images[0].id)
        assert decode(data).size == (stored.width, stored.height)


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
async def test_count_at_and_beyond_the_per_call_limit(harness, kind, model):
    h = await harness(kind, model=model)
    caps = h.service.registry.models[h.ref].capabilities
    op = _main_op(caps)
    most = caps.max_images_per_call
    if op != "generate" and most == 1 and kind == "deepmode":
        pytest.skip("single-image operation")
    at = await h.run(await _live_request(h, op, n=most))
    assert len(at.images) == most and len(_posts(h)) == 1
    if most + 1 > 10:
        return
    h.emu.clear()
    beyond = await h.run(await _live_request(h, op, n=most + 1))
    assert len(beyond.images) == most + 1 and beyond.credits_charged == most + 1
    assert len(_posts(h)) == 2


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
@pytest.mark.parametrize("field", list(OPTIONAL_FIELDS))
async def test_every_field_is_mapped_warned_or_rejected(harness, kind, model, field):
    h = await harness(kind, model=model)
    for op in sorted(h.service.registry.models[h.ref].capabilities.operations):
        base = await _live_request(h, op)
        h.emu.clear()
        baseline = await h.run(base)
        sent_before = _sent(h, random_seed=True)
        h.emu.clear()
        request = ImageRequest.model_validate({**dict(base), field: OPTIONAL_FIELDS[field]})
        try:
            result = await h.run(request)
        except InvalidRequestError as exc:
            assert field.split("_")[0] in str(exc), (op, str(exc))
            assert h.calls() == [], op
            continue
        warned = [w for w in result.warnings if field in w]
        mapped = _sent(h, random_seed=field != "seed") != sent_before
        assert warned or mapped, f"{op}: {field} was silently dropped"
        assert not (warned and mapped), f"{op}: {field} was both sent and reported as ignored"
        assert set(baseline.warnings) <= set(result.warnings), op


@pytest.mark.parametrize("kind", list(KINDS))
async def test_sizes_are_served_exactly_or_refused(harness, kind):
    spec = KINDS[kind]
    h = await harness(kind)
    if spec.size is None:
        with pytest.raises(InvalidRequestError, match="aspect ratio"):
            await h.generate(size=(512, 512))
    else:
        result = await h.generate(size=spec.size)
        assert (result.images[0].width, result.images[0].height) == spec.size
    if spec.bad_size is not None:
        h.emu.clear()
        with pytest.raises(InvalidRequestError):
            await h.generate(size=spec.bad_size)
        assert h.calls() == []
    assert await h.captured() == (0 if spec.size is None else 1)


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("aspect", ["1:1", "3:4", "7:3"])
async def test_aspect_ratios_are_kept_or_refused(harness, kind, aspect):
    h = await harness(kind)
    w, h_ = (int(x) for x in aspect.split(":"))
    try:
        result = await h.generate(aspect_ratio=aspect)
    except InvalidRequestError as exc:
        assert aspect in str(exc) or "1:1" in str(exc)
        assert h.calls() == []
        return
    image = result.images[0]
    assert abs(image.width / image.height - w / h_) < 0.05 * (w / h_), (image.width, image.height)


LIMIT = 64 * 64  # [images] max_pixels at its lowest: exactly one 64x64 input image


@pytest.mark.parametrize(("kind", "model"), VARIANTS, ids=IDS)
async def test_a_result_over_the_pixel_limit_is_refused_before_any_call(harness, kind, model):
    """Whatever plan() lets through comes back within ``[images] max_pixels``: the provider is
    never paid for an image imagegate would then reject. At this limit every generation and
    every upscale is too large; an edit that keeps its 64x64 input is not."""
    h = await harness(kind, model=model, settings={"images": {"max_pixels": LIMIT}})
    for op in sorted(h.service.registry.models[h.ref].capabilities.operations):
        h.emu.clear()
        try:
            result = await h.run(_request(op, h.name, model=h.ref))
        except InvalidRequestError as exc:
            assert f"limit is {LIMIT:,} pixels" in str(exc), (op, str(exc))
            assert h.calls() == [], op
            continue
        assert op not in ("generate", "upscale"), f"{op} was not refused"
        assert all(i.width * i.height <= LIMIT for i in result.images), op


async def test_deep_image_upscale_past_the_limit_costs_nothing(harness):
    h = await harness("deepimage")
    image = input_image(png((2048, 2048)))
    request = ImageRequest(operation="upscale", image=image, scale=4, model=h.ref)
    with pytest.raises(InvalidRequestError, match="8192x8192 image .67.1 MP.*40,000,000"):
        await h.run(request)
    assert h.calls() == [] and await h.remaining() == 100 and await h.captured() == 0


# ----- errors: retried or not, never charged ---------------------------------------------------


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_server_error_is_retried_then_succeeds(harness, kind):
    h = await harness(kind)
    h.emu.inject(Fault(status=503))
    result = await h.generate()
    assert len(result.images) == 1 and len(_posts(h)) == 2
    assert await h.captured() == 1


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_rate_limit_is_retried_after_retry_after(harness, kind):
    h = await harness(kind)
    h.emu.inject(Fault(status=429, retry_after=0))
    result = await h.generate()
    assert len(result.images) == 1 and len(_posts(h)) == 2


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_dropped_connection_is_retried(harness, kind):
    h = await harness(kind)
    h.emu.inject(Fault(drop_connection=True))
    result = await h.generate()
    assert len(result.images) == 1 and len(_posts(h)) == 2


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_slow_answer_times_out_and_is_retried(harness, kind):
    h = await harness(kind, real_http=True, provider={"timeout_s": 0.2})
    h.emu.inject(Fault(delay_s=0.6))
    result = await h.generate(size=(64, 64)) if kind == "deepimage" else await h.generate()
    assert len(result.images) == 1 and len(_posts(h)) == 2


@pytest.mark.parametrize("kind", list(KINDS))
async def test_retries_stop_after_two_and_nothing_is_charged(harness, kind):
    h = await harness(kind)
    before = await h.remaining()
    h.emu.inject(Fault(status=500), times=5)
    with pytest.raises(ProviderUnavailableError):
        await h.generate(n=1)
    assert len(_posts(h)) == 3  # one try and two retries
    assert await h.remaining() == before and await h.captured() == 0


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (Fault(status=400), ProviderRejectedError),
        (Fault(malformed_json=True), ProviderResponseError),
        (Fault(truncated_b64=True), ProviderResponseError),
        (Fault(moderation=True), ContentRejectedError),
    ],
    ids=["400", "malformed-json", "truncated-image", "moderation"],
)
@pytest.mark.parametrize("kind", list(KINDS))
async def test_non_retryable_failures_are_tried_once_and_not_charged(harness, kind, fault, error):
    if fault.moderation and not KINDS[kind].moderation:
        pytest.skip(f"{kind}'s API has no moderation")
    h = await harness(kind)
    before = await h.remaining()
    h.emu.inject(fault)
    with pytest.raises(error) as raised:
        await h.generate()
    assert len(_posts(h)) == 1
    assert await h.remaining() == before and await h.captured() == 0
    if error is ContentRejectedError:
        assert "content" in str(raised.value) and "nothing was charged" in str(raised.value)


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_wrong_key_is_an_auth_error_without_retries(harness, kind):
    h = await harness(kind)
    setattr(h.emu, h.spec.key_attr, "a-different-key")
    with pytest.raises(ProviderAuthError):
        await h.generate()
    assert len(_posts(h)) == 1 and await h.captured() == 0


@pytest.mark.parametrize("kind", list(KINDS))
async def test_a_missing_key_names_the_variable_and_calls_nothing(harness, kind):
    h = await harness(kind, key=False)
    with pytest.raises(ProviderAuthError, match=f"IG_TEST_{kind.upper()}_KEY"):
        await h.generate()
    assert h.calls() == []


@pytest.mark.parametrize("kind", list(KINDS))
async def test_api_keys_never_reach_errors_or_logs(harness, kind, caplog):
    caplog.set_level(logging.DEBUG)
    h = await harness(kind)
    echo = {
        "message": f"bad request for key {h.key}",
        "error": {"message": f"key {h.key} is wrong", "code": "x"},
        "code": "x",
    }
    for status in (400, 500, 401):
        h.emu.inject(Fault(status=status, body=echo), times=3)
        with pytest.raises(Exception) as raised:  # noqa: B017 - any error; its text is checked
            await h.generate()
        error = raised.value
        texts = [str(error), getattr(error, "detail", ""), repr(error.__dict__)]
        assert not any(h.key in text for text in texts), status
        h.emu.clear()
    jobs = await h.service.db.fetchall("SELECT error FROM job")
    assert jobs and not any(h.key in (row[0] or "") for row in jobs)
    assert h.key not in caplog.text


@pytest.mark.parametrize("kind", list(KINDS))
async def test_no_piece_of_a_key_survives_a_cut_or_a_provider_cutting_it(harness, kind):
    h = await harness(kind)
    key = h.key
    bodies = [
        {"message": "z" * 188 + key},  # messages are cut at 200 characters: inside the key
        {"message": f"bad key {key[:12]}..."},  # the provider echoed a cut key
        {"error": {"message": f"{'y' * 190}{key}", "code": "x"}},
        *({"message": "w" * pad + key} for pad in range(474, 500, 4)),  # details: cut at 500
    ]
    for body in bodies:
        h.emu.inject(Fault(status=400, body=body))
        with pytest.raises(Exception) as raised:  # noqa: B017 - any error; its text is checked
            await h.generate()
        error = raised.value
        for text in (str(error), getattr(error, "detail", ""), repr(error.__dict__)):
            assert key[:8] not in text, (body, text)
        h.emu.clear()


# ----- helpers ---------------------------------------------------------------------------------


def _main_op(model_or_caps) -> str:
    caps = getattr(model_or_caps, "capabilities", model_or_caps)
    return "generate" if "generate" in caps.operations else sorted(caps.operations)[0]


def _request(op: str, provider: str, **fields) -> ImageRequest:
    if op == "generate":
        return ImageRequest(prompt="a red fox", **fields)
    image = input_image(provider=provider, provider_image_id="abc123")
    mask = input_image(half_mask()) if op == "inpaint" else None
    return ImageRequest(operation=op, prompt="a red fox", image=image, mask=mask, **fields)


async def _live_request(h, op: str, **fields) -> ImageRequest:
    """A request for ``op`` that the emulator can serve; upscales start from a stored result."""
    if op == "upscale":
        made = await h.generate()
        image = await h.service.input_from_image(h.caller, made.images[0].id)
        h.emu.clear()
        return ImageRequest(operation="upscale", image=image, model=h.ref, **fields)
    if op == "generate":
        return h.request(**fields)
    mask = input_image(half_mask()) if op == "inpaint" else None
    return h.request(operation=op, image=input_image(), mask=mask, **fields)


def _posts(h) -> list:
    """The POSTs that ask for images (not those that stop a job the adapter gave up on)."""
    return [r for r in h.calls() if r.method == "POST" and r.path not in h.spec.cancel_paths]


def _sent(h, *, random_seed: bool = False) -> list:
    """What the emulator received in the POSTs, without transport noise (boundaries).

    ``random_seed``: the request had no seed, so a seed the adapter drew at random (ComfyUI's
    API-format workflows need one) is noise too."""
    out = []
    for r in _posts(h):
        files = {u.name: u.data for u in r.uploads}
        body = _without_seeds(r.json) if random_seed else r.json
        if isinstance(body, dict) and "prompt_id" in body:  # ComfyUI: a fresh id per run
            body = {**body, "prompt_id": "<id>"}
        out.append((r.path, body, r.form, files))
    return out


def _without_seeds(value):
    if isinstance(value, dict):
        return {k: "<random>" if k == "seed" else _without_seeds(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_seeds(v) for v in value]
    return value


async def test_fallback_on_outage_but_never_after_a_refusal(tmp_path, monkeypatch):
    hive = create_emulator("hive", image_size=(64, 64))
    nebula = create_emulator("nebulablock", image_size=(64, 64))
    monkeypatch.setenv("IG_HIVE3", hive.v3_api_key)
    monkeypatch.setenv("IG_NB", nebula.api_key)
    first, second = "h3:hive/sdxl-enhanced", "nb:black-forest-labs/FLUX.1-schnell"
    settings = parse_settings({
        "database": {"path": str(tmp_path / "db.sqlite")},
        "images": {"dir": str(tmp_path / "images")},
        "providers": {
            "h3": {"kind": "hive_v3", "base_url": "http://hive.test", "api_key_env": "IG_HIVE3",
                   "models": ["hive/sdxl-enhanced"]},
            "nb": {"kind": "nebulablock", "base_url": "http://nb.test/api/v1",
                   "api_key_env": "IG_NB", "models": ["black-forest-labs/FLUX.1-schnell"]},
        },
        "aliases": {"fast": [first, second]},
    })  # fmt: skip
    mounts = {
        "http://hive.test": httpx.ASGITransport(app=hive.app),
        "http://nb.test": httpx.ASGITransport(app=nebula.app),
    }
    async with httpx.AsyncClient(mounts=mounts) as client:
        service = await ImageService.open(settings, http=client, sweeper=False)
        service.orchestrator.base_delay_s = 0.01
        caller = Caller.parse("cli:tester")
        async with service:
            hive.inject(Fault(status=503), times=3)
            result = await service.generate(caller, ImageRequest(prompt="p", model="fast"))
            assert result.model == second and len(hive.requests) == 3
            nebula.clear()
            hive.inject(Fault(moderation=True))
            with pytest.raises(ContentRejectedError):
                await service.generate(caller, ImageRequest(prompt="p", model="fast"))
            assert nebula.requests == []
            assert (await service.quota(caller)).remaining == 50 - 1
