"""Asynchronous mode: with ``[callbacks] public_url`` set, Deepmode, Hive v2 and Deep-Image
hand results back through the ``CallbackHub`` on an unguessable per-job path, once."""

from __future__ import annotations

import httpx
import pytest

import core.callbacks
from core import JobTimeoutError
from tests.conftest import Firehose
from tests.emulators import Fault

ASYNC = {
    "deepmode": ("/api/images/generate", "callback"),
    "hive": ("/api/v2/task/async", "callback_url"),
    "deepimage": ("/rest_api/process", None),  # webhooks.complete
}


async def _open(harness, kind):
    # Deep-Image waits 10 poll intervals for its webhook, then polls; with the harness's 20 ms
    # interval that was 0.2 s, which a loaded machine overran (the webhook then came after the
    # waiter had gone: ignored, and the job polled). 10 s: the webhook decides, not the load.
    return await harness(kind, callbacks=True, provider={"poll_interval_s": 1.0})


def _callback_url(call, field):
    return call.json[field] if field else call.json["webhooks"]["complete"]


@pytest.mark.parametrize("kind", list(ASYNC))
async def test_results_arrive_by_callback_on_a_per_job_path(harness, kind):
    h = await _open(harness, kind)
    hub = h.service.callbacks
    first = await h.generate(size=(64, 64)) if kind == "deepimage" else await h.generate()
    second = await h.generate(size=(64, 64)) if kind == "deepimage" else await h.generate()
    path, field = ASYNC[kind]
    calls = h.calls(path)
    urls = [_callback_url(c, field) for c in calls]
    assert len(urls) == 2 and urls[0] != urls[1]
    assert all(u.startswith(f"{hub.public_url}/callbacks/") for u in urls)
    assert all(len(u.rsplit("/", 1)[1]) >= 32 for u in urls)  # unguessable tokens
    assert len(first.images) == len(second.images) == 1
    if kind == "deepimage":  # the webhook came, so no polling was needed
        assert not [c for c in h.calls() if c.method == "GET"]


@pytest.mark.parametrize("kind", list(ASYNC))
async def test_a_duplicate_callback_is_ignored(harness, kind):
    h = await _open(harness, kind)
    h.emu.inject(Fault(duplicate_callback=True))
    result = await h.generate(size=(64, 64)) if kind == "deepimage" else await h.generate()
    assert len(result.images) == 1 and result.credits_charged == 1
    await h.emu.drain()  # the second POST has been answered, so the hub has seen it
    assert len(h.emu.callbacks_sent) == 2 and h.service.callbacks.ignored == 1


@pytest.mark.parametrize("kind", ["deepmode", "hive"])
async def test_a_missing_callback_fails_at_the_deadline_uncharged(harness, kind):
    h = await harness(kind, callbacks=True, settings={"defaults": {"job_deadline_s": 0.5}})
    before = await h.remaining()
    h.emu.inject(Fault(missing_callback=True))
    with pytest.raises(JobTimeoutError):
        await h.generate()
    assert await h.remaining() == before and await h.captured() == 0
    # A callback that arrives after the job gave up is ignored.
    path, field = ASYNC[kind]
    url = _callback_url(h.calls(path)[0], field)
    async with httpx.AsyncClient() as client:
        late = await client.post(url, json=[])
    assert late.status_code == 404 and h.service.callbacks.ignored == 1


async def test_deepimage_falls_back_to_polling_when_the_webhook_is_missing(harness):
    h = await harness("deepimage", callbacks=True)
    h.emu.inject(Fault(missing_callback=True))
    result = await h.generate(size=(64, 64))
    job = result.images[0].provider_image_id
    assert [c.path for c in h.calls() if c.method == "GET"][-1] == f"/rest_api/result/{job}"
    assert result.credits_charged == 1


async def test_deepmode_upscale_also_runs_by_callback(harness):
    h = await harness("deepmode", callbacks=True)
    made = await h.generate()
    image = await h.service.input_from_image(h.caller, made.images[0].id)
    h.emu.clear()
    result = await h.service.upscale(
        h.caller, h.request(operation="upscale", prompt="", image=image)
    )
    (call,) = h.calls("/api/images/upscale")
    assert call.json["image_id"] == made.images[0].provider_image_id
    assert call.json["callback"].startswith(h.service.callbacks.public_url)
    assert result.images[0].width == made.images[0].width * 4


async def test_an_oversized_callback_is_refused_while_it_streams(harness, monkeypatch):
    h = await harness("deepmode", callbacks=True)
    monkeypatch.setattr(core.callbacks, "MAX_CALLBACK_BYTES", 64 * 1024)
    waiter = h.service.callbacks.expect()
    body = Firehose(16 * 1024, 4096)  # 64 MB, were it read whole
    # Through ASGI the body is handed over only as the receiver asks for it (a server such as
    # uvicorn may go on draining a connection, but not into the receiver's memory).
    transport = httpx.ASGITransport(app=h.service.callbacks.app)
    async with httpx.AsyncClient(transport=transport) as http:
        response = await http.post(waiter.url, content=body)
        assert response.status_code == 413
        assert body.sent <= 5, body.sent
        assert not waiter.future.done()
        ok = await http.post(waiter.url, json={"status": "done"})
    assert ok.status_code == 200 and await waiter.wait(1) == {"status": "done"}
