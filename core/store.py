"""Results on disk (content-addressed) and job records in SQLite.

Image files live at ``<dir>/<sha[:2]>/<sha>.<ext>``; written to a temporary name and renamed,
so a crash never leaves a half file under a real name. Image ids are random (unguessable), so
the same bytes made for two users are two images, each readable only by its owner.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import secrets
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .db import Database
from .images import EXTENSIONS, ImageInfo
from .types import GeneratedImage, ImageRequest, InputImage, JobRecord, StoredImage


def new_id() -> str:
    """A short unguessable id for jobs and images (fits Discord custom ids)."""
    return secrets.token_hex(8)


def _ms() -> int:
    return int(time.time() * 1000)


def _dt(ms: int | None) -> datetime | None:
    return None if ms is None else datetime.fromtimestamp(ms / 1000, UTC)


class ImageStore:
    """Stores delivered images and the job records that point at them."""

    def __init__(self, db: Database, directory: Path) -> None:
        self.db = db
        self.dir = directory

    def path_for(self, sha: str, mime: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.{EXTENSIONS.get(mime, 'bin')}"

    async def write_file(self, data: bytes, mime: str) -> tuple[str, Path]:
        """Store bytes content-addressed; returns (sha256, path)."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, mime)
        if not path.exists():
            await asyncio.to_thread(_atomic_write, path, data)
        return sha, path

    async def create_job(
        self,
        job_id: str,
        *,
        user: str,
        request: dict[str, Any],
        model: str,
        hold_id: str | None,
        owner: str,
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "INSERT INTO job (job_id, user_id, operation, model, status, request, hold_id,"
                " owner, created_at) VALUES (?, ?, ?, ?, 'running', ?, ?, ?, ?)",
                (
                    job_id,
                    user,
                    request["operation"],
                    model,
                    json.dumps(request),
                    hold_id,
                    owner,
                    _ms(),
                ),
            )

    async def add_images(
        self,
        job_id: str,
        user: str,
        images: list[tuple[str, GeneratedImage, ImageInfo]],
    ) -> list[StoredImage]:
        """Write each (model ref, image, checked info) to disk, then record them in one go."""
        stored: list[StoredImage] = []
        for index, (model, image, info) in enumerate(images):
            sha, path = await self.write_file(image.data, info.mime)
            stored.append(
                StoredImage(
                    id=new_id() + new_id(),
                    job_id=job_id,
                    index=index,
                    path=path,
                    mime=info.mime,
                    width=info.width,
                    height=info.height,
                    seed=image.seed,
                    sha256=sha,
                    model=model,
                    provider_image_id=image.provider_image_id,
                    meta=image.meta,
                )
            )
        now = _ms()
        async with self.db.write() as conn:
            await conn.executemany(
                "INSERT INTO image (image_id, job_id, idx, user_id, sha256, mime, width, height,"
                " seed, model, provider_image_id, meta, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                [
                    (
                        s.id,
                        job_id,
                        s.index,
                        user,
                        s.sha256,
                        s.mime,
                        s.width,
                        s.height,
                        s.seed,
                        s.model,
                        s.provider_image_id,
                        json.dumps(s.meta),
                        now,
                    )
                    for s in stored
                ],
            )
        return stored

    async def finish_job(
        self,
        job_id: str,
        *,
        status: str,
        credits_charged: int,
        warnings: list[str],
        error: str | None = None,
    ) -> None:
        async with self.db.write() as conn:
            await conn.execute(
                "UPDATE job SET status = ?, credits_charged = ?, warnings = ?, error = ?,"
                " finished_at = ? WHERE job_id = ?",
                (status, credits_charged, json.dumps(warnings), error, _ms(), job_id),
            )

    async def interrupt_jobs_of(self, owners: set[str]) -> int:
        """Mark running jobs of crashed processes as interrupted; returns how many."""
        if not owners:
            return 0
        marks = ",".join("?" * len(owners))
        async with self.db.write() as conn:
            cursor = await conn.execute(
                f"UPDATE job SET status = 'interrupted', error = 'the server stopped during the"
                f" job; nothing was charged', finished_at = ? WHERE status = 'running'"
                f" AND owner IN ({marks})",
                (_ms(), *owners),
            )
            return cursor.rowcount

    async def running_owners(self) -> set[str]:
        rows = await self.db.fetchall("SELECT DISTINCT owner FROM job WHERE status = 'running'")
        return {row[0] for row in rows if row[0]}

    async def job(self, job_id: str) -> JobRecord | None:
        row = await self.db.fetchone("SELECT * FROM job WHERE job_id = ?", (job_id,))
        if row is None:
            return None
        images = await self.db.fetchall(
            "SELECT * FROM image WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return JobRecord(
            job_id=row["job_id"],
            user=row["user_id"],
            operation=row["operation"],
            model=row["model"],
            status=row["status"],
            request=json.loads(row["request"]),
            images=[self._stored(r) for r in images],
            credits_charged=row["credits_charged"],
            warnings=json.loads(row["warnings"]),
            error=row["error"],
            created_at=datetime.fromtimestamp(row["created_at"] / 1000, UTC),
            finished_at=_dt(row["finished_at"]),
        )

    async def image(self, image_id: str) -> tuple[StoredImage, str] | None:
        """(image, owner user) or None."""
        row = await self.db.fetchone("SELECT * FROM image WHERE image_id = ?", (image_id,))
        return None if row is None else (self._stored(row), row["user_id"])

    def _stored(self, row: Any) -> StoredImage:
        return StoredImage(
            id=row["image_id"],
            job_id=row["job_id"],
            index=row["idx"],
            path=self.path_for(row["sha256"], row["mime"]),
            mime=row["mime"],
            width=row["width"],
            height=row["height"],
            seed=row["seed"],
            sha256=row["sha256"],
            model=row["model"],
            provider_image_id=row["provider_image_id"],
            meta=json.loads(row["meta"]),
        )

    async def read(self, image: StoredImage) -> bytes:
        return await asyncio.to_thread(image.path.read_bytes)

    async def request_record(self, request: ImageRequest) -> dict[str, Any]:
        """The request as stored with its job: input images are kept as files, by hash."""
        record = request.model_dump(mode="json", exclude={"image", "mask"})
        for name in ("image", "mask"):
            value: InputImage | None = getattr(request, name)
            if value is not None:
                sha, _ = await self.write_file(value.data, value.mime)
                record[name] = {
                    "sha256": sha,
                    "mime": value.mime,
                    "width": value.width,
                    "height": value.height,
                    "source_image_id": value.source_image_id,
                    "provider": value.provider,
                    "provider_image_id": value.provider_image_id,
                }
        return record

    async def request_from_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """Rebuild ``ImageRequest`` fields from ``request_record``'s output."""
        fields = dict(record)
        for name in ("image", "mask"):
            meta = fields.get(name)
            if meta:
                data = await asyncio.to_thread(
                    self.path_for(meta["sha256"], meta["mime"]).read_bytes
                )
                fields[name] = InputImage(
                    data=data, **{k: v for k, v in meta.items() if k != "sha256"}
                )
        return fields


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
