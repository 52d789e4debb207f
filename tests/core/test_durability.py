"""Durable delivery: with ``synchronous = "FULL"`` an image's data, then its directory entry,
are fsynced before the commit that records it; a recorded image whose file is missing or
damaged is found (at start-up, or when read), marked lost and never served."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from core import Caller, ImageRequest, ImageService, NotFoundError
from tests.conftest import make_settings, png_bytes

ALICE = Caller(frontend="cli", user_id="alice")


class Trace:
    """The order of fsyncs (by the path synced) and of SQL statements run on any connection."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.events: list[tuple[str, str]] = []
        real_fsync, real_connect = os.fsync, sqlite3.connect

        def fsync(fd: int) -> None:
            self.events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
            real_fsync(fd)

        def connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
            conn = real_connect(*args, **kwargs)
            conn.set_trace_callback(lambda sql: self.events.append(("sql", sql)))
            return conn

        monkeypatch.setattr(os, "fsync", fsync)
        monkeypatch.setattr(sqlite3, "connect", connect)

    def first(self, kind: str, test: Any, after: int = -1) -> int:
        """The index of the first event of ``kind`` after ``after`` that passes ``test``."""
        for index, (k, what) in enumerate(self.events):
            if index > after and k == kind and test(what):
                return index
        raise AssertionError(f"no {kind} event after {after} passing the test: {self.events}")

    def fsyncs(self) -> list[str]:
        return [what for kind, what in self.events if kind == "fsync"]


async def test_full_syncs_file_data_then_directory_then_commits(tmp_path, monkeypatch):
    trace = Trace(monkeypatch)
    async with await ImageService.open(make_settings(tmp_path), sweeper=False) as service:
        result = await service.generate(ALICE, ImageRequest(prompt="a lighthouse", n=3))
    for image in result.images:
        data = trace.first("fsync", lambda p, i=image: Path(p).name.startswith(i.sha256 + "."))
        assert trace.events[data][1].endswith(".tmp")  # synced before the rename
        folder = trace.first("fsync", lambda p, i=image: p == str(i.path.parent), after=data)
        insert = trace.first("sql", lambda s, i=image: "INSERT INTO image" in s and i.id in s)
        commit = trace.first("sql", lambda s: s == "COMMIT", after=insert)
        assert data < folder < commit, trace.events
        assert image.path.read_bytes() and image.size_bytes == image.path.stat().st_size


async def test_full_syncs_new_directories_into_their_parents(tmp_path, monkeypatch):
    trace = Trace(monkeypatch)
    async with await ImageService.open(make_settings(tmp_path), sweeper=False) as service:
        result = await service.generate(ALICE, ImageRequest(prompt="a lighthouse"))
    shard = result.images[0].path.parent
    synced = trace.fsyncs()
    assert str(tmp_path) in synced and str(shard.parent) in synced  # images/, images/ab/


async def test_normal_keeps_writing_without_fsync(tmp_path, monkeypatch):
    trace = Trace(monkeypatch)
    settings = make_settings(tmp_path, database={"synchronous": "NORMAL"})
    async with await ImageService.open(settings, sweeper=False) as service:
        result = await service.generate(ALICE, ImageRequest(prompt="a lighthouse", n=2))
        for image in result.images:
            assert (await service.image(ALICE, image.id))[1] == image.path.read_bytes()
    assert trace.fsyncs() == []


async def test_start_up_marks_missing_and_truncated_images_lost(tmp_path, caplog):
    settings = make_settings(tmp_path)
    async with await ImageService.open(settings, sweeper=False) as service:
        kept, cut = (await service.generate(ALICE, ImageRequest(prompt="a fox", n=2))).images
        gone = (await service.generate(ALICE, ImageRequest(prompt="an owl"))).images[0]
    size = cut.path.stat().st_size
    cut.path.write_bytes(cut.path.read_bytes()[: size // 2])  # as a power cut can leave it
    gone.path.unlink()

    with caplog.at_level(logging.WARNING, logger="imagegate"):
        service = await ImageService.open(settings, sweeper=False)
    async with service:
        logged = caplog.text
        assert f"image {cut.id} of job {cut.job_id} is truncated ({size // 2} of {size}" in logged
        assert f"image {gone.id} of job {gone.job_id} is missing" in logged
        assert "marked lost: it is never served" in logged
        job = await service.job(ALICE, cut.job_id)
        assert job.images[0].lost is None
        assert job.images[1].lost and "start-up check" in job.images[1].lost
        for image in (cut, gone):
            with pytest.raises(NotFoundError, match="is lost"):
                await service.image(ALICE, image.id)
        assert (await service.image(ALICE, kept.id))[1] == kept.path.read_bytes()

    caplog.clear()  # reported once: the next start has nothing new to say
    with caplog.at_level(logging.WARNING, logger="imagegate"):
        await (await ImageService.open(settings, sweeper=False)).aclose()
    assert "marked lost" not in caplog.text


async def test_a_damaged_file_is_found_when_read_and_never_served(service, caplog):
    image = (await service.generate(ALICE, ImageRequest(prompt="a fox"))).images[0]
    image.path.write_bytes(b"\0" * image.path.stat().st_size)  # right size, wrong bytes
    with caplog.at_level(logging.WARNING, logger="imagegate"):
        with pytest.raises(NotFoundError, match="damaged"):
            await service.image(ALICE, image.id)
    assert f"image {image.id} of job {image.job_id} is damaged" in caplog.text
    job = await service.job(ALICE, image.job_id)
    assert job.images[0].lost and "when it was read" in job.images[0].lost
    with pytest.raises(NotFoundError, match="is lost"):
        await service.input_from_image(ALICE, image.id)


async def test_the_same_bytes_made_again_repair_a_damaged_file(service):
    request = ImageRequest(prompt="a fox", seed=3)
    image = (await service.generate(ALICE, request)).images[0]
    good = image.path.read_bytes()
    for damage in (good[:10], bytes(len(good))):  # cut short; the right size but zeroed
        image.path.write_bytes(damage)
        again = (await service.generate(ALICE, request)).images[0]
        assert again.path == image.path and image.path.read_bytes() == good


async def test_rerun_refuses_a_damaged_input_image(service):
    source = png_bytes((64, 64))
    request = ImageRequest(
        operation="variation", prompt="x", image=await service.load_input(source)
    )
    job = await service.edit(ALICE, request)
    stored = service.store.path_for(job.images[0].sha256, "image/png").parent.parent
    [input_file] = [p for p in stored.rglob("*.png") if p.read_bytes() == source]
    input_file.write_bytes(source[:20])
    with pytest.raises(NotFoundError, match="input image of this job is damaged"):
        await service.rerun(ALICE, job.job_id)
