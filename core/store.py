"""Results on disk (content-addressed) and job records in the database.

Image files live at ``<dir>/<sha[:2]>/<sha>.<ext>``; written to a temporary name and renamed,
so a crash never leaves a half file under a real name. Image ids are random (unguessable), so
the same bytes made for two users are two images, each readable only by its owner.

Durability (``durable``, i.e. ``[database] synchronous = "FULL"``): a file's data is fsynced
before its rename, and its directory after it, all before the write returns; the commit that
records the image comes later, so a power cut can never leave a recorded image without its
bytes. Each image is synced in the worker thread that wrote it, so the syncs of concurrent
jobs are in flight together and the file system's journal commits them as one group, as the
database writer groups commits (on ext4 here: 9 ms per image one after another, 0.6 ms each
six at a time; one thread syncing a group's directories in turn, the writer's own pattern,
was three times slower, as every fsync waits for a disk flush of its own). Whatever slips
through anyway (``NORMAL``, a disk that lies, a file removed by hand) is caught by
``check_recent`` at start-up and by the hash check of every ``read``: such an image is marked
lost and never served.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .db import Database, Tx, from_row, skip_locked
from .errors import InvalidRequestError, NotFoundError
from .ids import random_hex
from .images import EXTENSIONS, ImageInfo, preview, sniff_mime
from .leases import LAPSED, lease_clock
from .types import (
    GeneratedImage,
    ImagePage,
    ImageRequest,
    InputImage,
    JobPage,
    JobRecord,
    StoredImage,
)

log = logging.getLogger("imagegate")

THUMB_MAX_BYTES = 64 * 1024


@dataclass(frozen=True)
class StoredFile(ImageInfo):
    """An image already checked (``ImageInfo``) and written to the store (``write_checked``)."""

    sha256: str
    path: Path


def new_id(nbytes: int = 8) -> str:
    """An unguessable id: 16 hex digits by default, for jobs (fits Discord custom ids)."""
    return random_hex(nbytes)


async def _share(tx: Tx, job_id: str, scope: str, now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO job_share (job_id, scope, created_at) VALUES (?, ?, ?)"
        " ON CONFLICT (job_id, scope) DO NOTHING",
        (job_id, scope, now_ms),
    )


async def _mark_deleted(tx: Tx, job_id: str, by: str, now_ms: int) -> None:
    await tx.execute(
        "INSERT INTO job_deleted (job_id, deleted_by, deleted_at) VALUES (?, ?, ?)"
        " ON CONFLICT (job_id) DO NOTHING",
        (job_id, by, now_ms),
    )


class ImageStore:
    """Stores delivered images and the job records that point at them. ``clock`` returns epoch
    seconds (injectable for tests) and stamps the records."""

    def __init__(
        self,
        db: Database,
        directory: Path,
        *,
        durable: bool = True,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``durable``: fsync each image file and its directory before it is recorded."""
        self.db = db
        self.dir = directory
        self.durable = durable
        self.clock = clock

    def _ms(self) -> int:
        return int(self.clock() * 1000)

    def path_for(self, sha: str, mime: str) -> Path:
        return self.dir / sha[:2] / f"{sha}.{EXTENSIONS.get(mime, 'bin')}"

    async def write_file(self, data: bytes, mime: str) -> tuple[str, Path]:
        """Store bytes content-addressed; returns (sha256, path)."""
        return await asyncio.to_thread(self.write_file_sync, data, mime)

    def write_checked(self, data: bytes, info: ImageInfo) -> StoredFile:
        """Store a checked image (blocking: for a worker thread)."""
        sha, path = self.write_file_sync(data, info.mime)
        return StoredFile(info.mime, info.width, info.height, sha, path)

    def write_file_sync(self, data: bytes, mime: str) -> tuple[str, Path]:
        """``write_file`` for a worker thread: hashing a large image takes the event loop
        ~10 ms, so the hash, the check and the write all happen here."""
        sha = hashlib.sha256(data).hexdigest()
        path = self.path_for(sha, mime)
        if not _holds(path, data):  # new, or a damaged copy that these bytes repair
            try:
                _atomic_write(path, data, self.durable)
            except FileNotFoundError:  # the first image in this directory (no mkdir per image)
                _make_dirs(path.parent, self.durable)
                _atomic_write(path, data, self.durable)
        elif self.durable:
            # Another job may have renamed it here a moment ago, its directory not synced yet.
            _sync_dir(path.parent)
        return sha, path

    # Recording a job takes two transactions, each shared with the quota step it belongs to
    # (``QuotaStore.reserve`` and ``settle_and_report`` take these as ``also``): the job record
    # is written with its hold, and its images and outcome with its charge.

    async def insert_job(
        self,
        tx: Tx,
        job_id: str,
        *,
        user: str,
        request: dict[str, Any],
        model: str,
        hold_id: str | None,
        owner: str,
    ) -> None:
        """Record a running job (inside a ``Database.transact`` body)."""
        await tx.execute(
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
                self._ms(),
            ),
        )

    async def save_images(
        self, job_id: str, images: list[tuple[str, GeneratedImage, ImageInfo]]
    ) -> list[StoredImage]:
        """Write each (model ref, image, checked info) to disk unless ``info`` is a
        ``StoredFile`` (written already); ``record_results`` then records them."""
        stored = []
        for index, (model, image, info) in enumerate(images):
            if isinstance(info, StoredFile):
                sha, path = info.sha256, info.path
            else:
                sha, path = await self.write_file(image.data, info.mime)
            stored.append(_stored_image(job_id, index, model, image, info, sha, path))
        return stored

    async def record_results(
        self,
        tx: Tx,
        job_id: str,
        user: str,
        stored: list[StoredImage],
        *,
        status: str,
        credits_charged: int,
        warnings: list[str],
        error: str | None = None,
    ) -> None:
        """Record a job's images and its outcome (inside a ``Database.transact`` body)."""
        if stored:
            await _insert_images(tx, _image_rows(user, stored, self._ms()))
        row = (status, credits_charged, json.dumps(warnings), error, self._ms(), job_id)
        await _update_job(tx, row)

    async def finish_job(
        self,
        job_id: str,
        *,
        status: str,
        credits_charged: int,
        warnings: list[str],
        error: str | None = None,
    ) -> None:
        row = (status, credits_charged, json.dumps(warnings), error, self._ms(), job_id)
        await self.db.transact(_update_job, row)

    async def interrupt_lapsed(self, instance: str) -> int:
        """Finish the running jobs of processes whose lease lapsed (never ``instance``'s, this
        process's own): interrupted, or delivered when their charge was already taken.
        Returns how many were marked interrupted."""
        return await self.db.transact(_interrupt_jobs, instance, self._ms())

    async def job_status(self, job_id: str) -> str | None:
        """Only the job's status (a cheap look while waiting for it), or None."""
        row = await self.db.fetchone("SELECT status FROM job WHERE job_id = ?", (job_id,))
        return None if row is None else row[0]

    async def job(self, job_id: str) -> JobRecord | None:
        row = await self.db.fetchone("SELECT * FROM job WHERE job_id = ?", (job_id,))
        if row is None:
            return None
        images = await self.db.fetchall(
            "SELECT * FROM image WHERE job_id = ? ORDER BY idx", (job_id,)
        )
        return self._record(row, [self._stored(r) for r in images], await self._marks([row]))

    async def jobs_of(self, user: str, *, limit: int, cursor: str | None) -> JobPage:
        """A page of ``user``'s jobs with their images, newest first.

        Raises:
            InvalidRequestError: ``cursor`` is not one a page handed out."""
        rows, next_cursor = await self._page("job", "job_id", user, limit, cursor)
        images: dict[str, list[StoredImage]] = {row["job_id"]: [] for row in rows}
        if rows:
            marks = ",".join("?" * len(rows))
            for r in await self.db.fetchall(
                f"SELECT * FROM image WHERE job_id IN ({marks}) ORDER BY idx", tuple(images)
            ):
                images[r["job_id"]].append(self._stored(r))
        found = await self._marks(rows)
        jobs = [self._record(row, images[row["job_id"]], found) for row in rows]
        return JobPage(jobs=jobs, next_cursor=next_cursor)

    async def images_of(self, user: str, *, limit: int, cursor: str | None) -> ImagePage:
        """A page of ``user``'s stored images (lost ones left out), newest first; raises as
        ``jobs_of``."""
        rows, next_cursor = await self._page("image", "image_id", user, limit, cursor)
        return ImagePage(images=[self._stored(r) for r in rows], next_cursor=next_cursor)

    async def _page(
        self, table: str, id_column: str, user: str, limit: int, cursor: str | None
    ) -> tuple[list[Any], str | None]:
        """Keyset paging, newest first: a page starts strictly after the last row shown, by
        (created_at, id), so rows added meanwhile never shift a page. A cursor is
        "<ms>.<id>". Returns the page's rows and the next page's cursor (None: last page)."""
        where = " AND lost IS NULL" if table == "image" else ""
        params: tuple[Any, ...] = (user,)
        if cursor is not None:
            stamp, _, key = cursor.partition(".")
            if not (stamp.isdecimal() and len(stamp) <= 15 and key.isalnum() and len(key) <= 64):
                raise InvalidRequestError("that cursor is not one this server gave out")
            where += f" AND (created_at < ? OR (created_at = ? AND {id_column} < ?))"
            params += (int(stamp), int(stamp), key)
        rows = await self.db.fetchall(
            f"SELECT * FROM {table} WHERE user_id = ?{where}"
            f" ORDER BY created_at DESC, {id_column} DESC LIMIT ?",
            (*params, limit + 1),
        )
        if len(rows) <= limit:
            return rows, None
        last = rows[limit - 1]
        return rows[:limit], f"{last['created_at']}.{last[id_column]}"

    async def request_cancel(self, job_id: str) -> None:
        """Record that a running job should stop (the process running it acts on it)."""
        await self.db.transact(_request_cancel, job_id, self._ms())

    async def cancels_requested(self, job_ids: list[str]) -> list[str]:
        """Those of ``job_ids`` still running with a cancel request recorded."""
        marks = ",".join("?" * len(job_ids))
        rows = await self.db.fetchall(
            f"SELECT job_id FROM job WHERE job_id IN ({marks}) AND status = 'running'"
            " AND cancel_requested_at IS NOT NULL",
            tuple(job_ids),
        )
        return [row[0] for row in rows]

    async def _marks(self, rows: list[Any]) -> tuple[dict[str, int], set[str]]:
        """What the jobs of ``rows`` reserved (by hold id) and which were deleted."""
        if not rows:
            return {}, set()
        holds = [row["hold_id"] for row in rows if row["hold_id"]]
        held: dict[str, int] = {}
        if holds:
            found = await self.db.fetchall(
                "SELECT hold_id, from_allowance + from_granted FROM hold"
                f" WHERE hold_id IN ({','.join('?' * len(holds))})",
                tuple(holds),
            )
            held = {r[0]: int(r[1]) for r in found}
        deleted = await self.db.fetchall(
            f"SELECT job_id FROM job_deleted WHERE job_id IN ({','.join('?' * len(rows))})",
            tuple(row["job_id"] for row in rows),
        )
        return held, {r[0] for r in deleted}

    def _record(
        self, row: Any, images: list[StoredImage], marks: tuple[dict[str, int], set[str]]
    ) -> JobRecord:
        return from_row(
            JobRecord,
            row,
            user=row["user_id"],
            request=json.loads(row["request"]),
            images=images,
            warnings=json.loads(row["warnings"]),
            cancel_requested=row["cancel_requested_at"] is not None,
            credits_held=marks[0].get(row["hold_id"]) if row["hold_id"] else None,
            deleted=row["job_id"] in marks[1],
        )

    async def share(self, job_id: str, scope: str) -> None:
        """Record that the job's result was shown publicly in ``scope``."""
        await self.db.transact(_share, job_id, scope, self._ms())

    async def is_shared(self, job_id: str, scope: str) -> bool:
        row = await self.db.fetchone(
            "SELECT 1 FROM job_share WHERE job_id = ? AND scope = ?", (job_id, scope)
        )
        return row is not None

    async def mark_deleted(self, job_id: str, by: str) -> None:
        """The job's result is deleted: history and /show never show it again."""
        await self.db.transact(_mark_deleted, job_id, by, self._ms())

    async def image(self, image_id: str) -> tuple[StoredImage, str] | None:
        """(image, owner user) or None."""
        row = await self.db.fetchone("SELECT * FROM image WHERE image_id = ?", (image_id,))
        return None if row is None else (self._stored(row), row["user_id"])

    async def result_with_bytes(self, user: str, sha256: str) -> StoredImage | None:
        """The newest of ``user``'s stored results whose file has this hash (not lost)."""
        row = await self.db.fetchone(
            "SELECT * FROM image WHERE user_id = ? AND sha256 = ? AND lost IS NULL"
            " ORDER BY created_at DESC LIMIT 1",
            (user, sha256),
        )
        return None if row is None else self._stored(row)

    def _stored(self, row: Any) -> StoredImage:
        return from_row(
            StoredImage,
            row,
            id=row["image_id"],
            index=row["idx"],
            path=self.path_for(row["sha256"], row["mime"]),
            meta=json.loads(row["meta"]),
            size_bytes=row["bytes"],
        )

    async def read(self, image: StoredImage) -> bytes:
        """The image's bytes, checked against its hash.

        Raises:
            NotFoundError: the image is lost (now or before): its file is missing or damaged.
                A newly found loss is recorded and logged.
        """
        if image.lost:
            raise _lost_error(image.id, image.lost)
        data, problem = await asyncio.to_thread(_read_checked, image.path, image.sha256)
        if problem is None:
            return data
        reason = f"{problem} when it was read on {_now_text()}"
        await self.mark_lost([(image, reason)])
        raise _lost_error(image.id, reason)

    async def mark_lost(self, lost: list[tuple[StoredImage, str]]) -> None:
        """Record each (image, why) as lost, with every other image that shares its file, and
        log what was done."""
        await self.db.transact(_mark_lost, [(why, s.sha256, s.mime) for s, why in lost])
        for image, why in lost:
            log.warning(
                "image %s of job %s is %s; marked lost: it is never served again and"
                " 'imagegate job show %s' says so (its charge stands)",
                image.id,
                image.job_id,
                why,
                image.job_id,
            )

    async def check_recent(self, window_s: int = 3600, limit: int = 10_000) -> int:
        """Start-up check of the images recorded in the ``window_s`` before the newest one
        (those a power cut can have caught unwritten; at most ``limit``): each whose file is
        missing or shorter or longer than recorded is marked lost. Returns how many."""
        rows = await self.db.fetchall(
            "SELECT * FROM image WHERE lost IS NULL AND created_at >="
            " (SELECT max(created_at) FROM image) - ? ORDER BY created_at DESC LIMIT ?",
            (window_s * 1000, limit),
        )
        images = [self._stored(row) for row in rows]
        found = await asyncio.to_thread(_check_sizes, images)
        when = f"at the start-up check on {_now_text()}"
        if found:
            await self.mark_lost([(image, f"{why} {when}") for image, why in found])
        return len(found)

    def thumbnail_sync(self, image: StoredImage, edge: int) -> tuple[bytes, str]:
        """A small copy of ``image`` (bytes, MIME), made on first use and kept under
        ``<dir>/thumbs/`` (blocking: for a worker thread).

        Raises:
            OSError: the image file is gone.
        """
        path = self.dir / "thumbs" / image.sha256[:2] / f"{image.sha256}-{edge}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            data, _ = preview(image.path.read_bytes(), max_edge=edge, max_bytes=THUMB_MAX_BYTES)
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data, False)  # a cache: made again if lost
        return data, sniff_mime(data) or "application/octet-stream"

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
        """Rebuild ``ImageRequest`` fields from ``request_record``'s output.

        Raises:
            NotFoundError: an input image's file is missing or damaged.
        """
        fields = dict(record)
        for name in ("image", "mask"):
            meta = fields.get(name)
            if meta:
                path = self.path_for(meta["sha256"], meta["mime"])
                data, problem = await asyncio.to_thread(_read_checked, path, meta["sha256"])
                if problem is not None:
                    raise NotFoundError(
                        f"the input {name} of this job is {problem}; send it again instead"
                    )
                fields[name] = InputImage(
                    data=data, **{k: v for k, v in meta.items() if k != "sha256"}
                )
        return fields


def copy_out(image: StoredImage, directory: Path) -> Path:
    """Copy a stored image's file into ``directory`` (made if missing) as
    ``<job_id>-<index>.<ext>``, for people and tools that want files (``--out``, ``[mcp]
    save_dir``); blocking. Returns the copy's absolute path.

    Raises:
        OSError: the directory or the copy cannot be written.
    """
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / f"{image.job_id}-{image.index}{image.path.suffix}"
    if _size(target) != image.size_bytes or image.size_bytes is None:
        shutil.copyfile(image.path, target)
    return target.resolve()


# --- rows, and transaction bodies for Database.transact ---------------------------------------


def _stored_image(
    job_id: str,
    index: int,
    model: str,
    image: GeneratedImage,
    info: ImageInfo,
    sha: str,
    path: Path,
) -> StoredImage:
    """The record of an image already written to ``path`` (``write_file_sync``)."""
    return StoredImage(
        id=new_id(16),
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
        size_bytes=len(image.data),
    )


def _image_rows(user: str, stored: list[StoredImage], now: int) -> list[tuple[Any, ...]]:
    """The ``image`` rows ``insert_images`` takes."""
    return [
        (
            s.id,
            s.job_id,
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
            s.size_bytes,
            now,
        )
        for s in stored
    ]


async def _insert_images(tx: Tx, rows: list[tuple[Any, ...]]) -> None:
    await tx.executemany(
        "INSERT INTO image (image_id, job_id, idx, user_id, sha256, mime, width, height, seed,"
        " model, provider_image_id, meta, bytes, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        rows,
    )


async def _update_job(tx: Tx, row: tuple[Any, ...]) -> None:
    """``row``: (status, credits charged, warnings JSON, error, finished at ms, job id)."""
    await tx.execute(
        "UPDATE job SET status = ?, credits_charged = ?, warnings = ?, error = ?, finished_at = ?"
        " WHERE job_id = ?",
        row,
    )


async def _request_cancel(tx: Tx, job_id: str, now_ms: int) -> None:
    await tx.execute(
        "UPDATE job SET cancel_requested_at = ? WHERE job_id = ? AND status = 'running'"
        " AND cancel_requested_at IS NULL",
        (now_ms, job_id),
    )


async def _mark_lost(tx: Tx, rows: list[tuple[str, str, str]]) -> None:
    """``rows``: (why, sha256, mime): every image stored in that file is lost."""
    await tx.executemany(
        "UPDATE image SET lost = ? WHERE sha256 = ? AND mime = ? AND lost IS NULL", rows
    )


async def _interrupt_jobs(tx: Tx, instance: str, now_ms: int) -> int:
    now_ms = await lease_clock(tx, now_ms)  # the lapse, and when it was found, by that clock
    jobs = await tx.fetchall(
        "SELECT j.job_id, j.request, h.state, h.settled_amount,"
        " (SELECT count(*) FROM image i WHERE i.job_id = j.job_id)"
        " FROM job j LEFT JOIN hold h ON h.hold_id = j.hold_id"
        f" WHERE j.status = 'running' AND j.owner <> ? AND j.owner {LAPSED} ORDER BY j.job_id"
        + skip_locked(tx, "j"),  # one order for every sweeper, as in the quota sweep
        (instance, now_ms),
    )
    interrupted = 0
    for job_id, request, hold_state, settled, images in jobs:
        if hold_state == "settled":
            # Killed after its hold was settled: the images are stored and charged, so the job
            # was delivered (a replay of its request returns them); only the final record was
            # missing.
            status = "succeeded" if images >= json.loads(request).get("n", 1) else "partial"
            row: tuple[Any, ...] = (status, settled, None, now_ms, job_id)
        else:
            error = "the server stopped during the job; nothing was charged"
            row = ("interrupted", 0, error, now_ms, job_id)
            interrupted += 1
        await tx.execute(
            "UPDATE job SET status = ?, credits_charged = ?, error = ?, finished_at = ?"
            " WHERE job_id = ? AND status = 'running'",
            row,
        )
    return interrupted


def _lost_error(image_id: str, why: str) -> NotFoundError:
    return NotFoundError(f"image {image_id} is lost ({why}); it cannot be served")


def _read_checked(path: Path, sha256: str) -> tuple[bytes, str | None]:
    """(bytes, None), or (b"", what is wrong with the file)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return b"", "missing"
    except OSError as exc:
        return b"", f"unreadable ({exc.strerror})"
    if hashlib.sha256(data).hexdigest() != sha256:
        return b"", "damaged (its bytes do not match their hash)"
    return data, None


def _check_sizes(images: list[StoredImage]) -> list[tuple[StoredImage, str]]:
    """The images whose file is missing or not the size recorded (empty, when unrecorded)."""
    found = []
    for image in images:
        size, expected = _size(image.path), image.size_bytes
        if size is None:
            found.append((image, "missing"))
        elif expected is None and size == 0:
            found.append((image, "empty"))
        elif expected is not None and size < expected:
            found.append((image, f"truncated ({size} of {expected} bytes)"))
        elif expected is not None and size > expected:
            found.append((image, f"the wrong size ({size} bytes, {expected} recorded)"))
    return found


def _now_text() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def _atomic_write(path: Path, data: bytes, durable: bool) -> None:
    """Write ``data`` to a temporary name and rename it to ``path``; ``durable``: fsync the
    data before the rename and the directory after it."""
    tmp = path.with_suffix(f".{os.getpid()}.{random_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if durable:
                os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if durable:
        _sync_dir(path.parent)


def _make_dirs(directory: Path, durable: bool) -> None:
    """``mkdir -p``; ``durable``: each new directory's entry is synced to its parent."""
    missing = []
    while not directory.is_dir():
        missing.append(directory)
        directory = directory.parent
    for new in reversed(missing):
        new.mkdir(exist_ok=True)
        if durable:
            _sync_dir(new.parent)


def _sync_dir(directory: Path) -> None:
    """fsync a directory: the names created or renamed in it survive a power cut."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _holds(path: Path, data: bytes) -> bool:
    """Whether ``path`` holds exactly ``data`` (read only when the size matches)."""
    try:
        return _size(path) == len(data) and path.read_bytes() == data
    except OSError:
        return False


def _size(path: Path) -> int | None:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return None
