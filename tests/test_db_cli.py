"""``imagegate db status|upgrade|copy`` as an operator runs them (in-process: the commands
are thin, and the database under them is tested in tests/core/test_db.py)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest

from core import Caller, ImageRequest, ImageService, QuotaExceededError
from core.cli import main
from tests.conftest import PG_URL_ENV, make_settings

ADMIN = Caller(frontend="cli", user_id="ops", is_admin=True)
ALICE = Caller(frontend="cli", user_id="alice")
BOB = Caller(frontend="discord", user_id="42")
QUOTA = {"allowance": 20, "rate_per_minute": 30}


def _config(tmp_path: Path, backend: dict[str, Any], extra: str = "") -> str:
    lines = ["[database]"] + [f"{key} = {json.dumps(value)}" for key, value in backend.items()]
    path = tmp_path / "config.toml"
    path.write_text("\n".join(lines) + f'\n{extra}\n[images]\ndir = "{tmp_path / "images"}"\n')
    return str(path)


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> Any:
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_then_upgrade_then_status(tmp_path, backend, capsys):
    config = _config(tmp_path, backend, "auto_migrate = false")
    status = _json(capsys, "--config", config, "db", "status")
    assert status["backend"] == ("postgresql" if "url_env" in backend else "sqlite")
    assert status["pending"] == [m["name"] for m in status["migrations"]]
    assert "postgresql://" not in json.dumps(status)  # the URL may hold a password
    # auto_migrate = false: nothing else opens an outdated database
    assert main(["--config", config, "quota", "show", "cli:ops"]) == 1
    assert "imagegate db upgrade" in capsys.readouterr().err
    applied = _json(capsys, "--config", config, "db", "upgrade")
    assert applied["applied"] == status["pending"]
    status = _json(capsys, "--config", config, "db", "status")
    assert status["pending"] == [] and all(m["applied_at"] for m in status["migrations"])
    assert main(["--config", config, "db", "upgrade"]) == 0
    assert "up to date" in capsys.readouterr().out
    assert main(["--config", config, "quota", "show", "cli:ops"]) == 0


async def _fill_sqlite(tmp_path: Path) -> dict[str, Any]:
    """A SQLite database with something of everything: grants, allowances, delivered and
    failed jobs, an open hold, settings and a token. Returns what to find after the copy."""
    settings = make_settings(tmp_path, quota=QUOTA)
    async with await ImageService.open(settings, sweeper=False) as service:
        await service.grant(ADMIN, ALICE, 7, reason="welcome")
        await service.set_allowance(ADMIN, BOB, 3)
        result = await service.generate(ALICE, ImageRequest(prompt="a fox", n=2, seed=4))
        await service.generate(BOB, ImageRequest(prompt="an owl"), idempotency_key="k-bob")
        with pytest.raises(QuotaExceededError):
            await service.generate(BOB, ImageRequest(prompt="too many", n=3))
        await service.quotas.reserve(
            ALICE.key, amount=2, idem_key="open", request_hash="h", policy=service.policy(ALICE)
        )
        await service.set_scope_settings(ADMIN, "discord:guild:1", {"nsfw": "strict"})
        token, _ = await service.mint_token(ADMIN, "admin", "ops")
        return {
            "quota": {c.key: await service.quota(c) for c in (ALICE, BOB)},
            "history": {c.key: await service.history(ADMIN, c) for c in (ALICE, BOB)},
            "job": await service.job(ALICE, result.job_id),
            "token": token,
            "settings": settings,
        }


async def test_db_copy_round_trip_keeps_every_credit_and_record(tmp_path, pg_url, monkeypatch):
    before = await _fill_sqlite(tmp_path)
    monkeypatch.setenv(PG_URL_ENV, pg_url)
    pg = {"path": str(tmp_path / "unused.db"), "url_env": PG_URL_ENV}
    config = _config(tmp_path, pg)
    sqlite_path = str(before["settings"].database.path)

    copied = await asyncio.to_thread(_run_json, config, "db", "copy", sqlite_path)
    assert copied["copied"]["ledger"] == sum(len(h) for h in before["history"].values())
    assert copied["accounts_checked"] == 2 and copied["copied"]["api_token"] == 1

    settings = make_settings(tmp_path, database=pg, quota=QUOTA)
    async with await ImageService.open(settings, sweeper=False) as service:
        for caller in (ALICE, BOB):
            assert await service.quota(caller) == before["quota"][caller.key]
            assert await service.history(ADMIN, caller) == before["history"][caller.key]
        job = await service.job(ALICE, before["job"].job_id)
        assert job == before["job"]
        _, data = await service.image(ALICE, job.images[0].id)  # the shared images dir
        assert data == job.images[0].path.read_bytes()
        assert await service.get_scope_settings("discord:guild:1") == {"nsfw": "strict"}
        assert (await service.verify_token("admin", before["token"])).user == "ops"
        assert await service.quotas.check_ledger() == []
        # New entries continue after the copied ids; the idempotency keys came along.
        again = await service.generate(BOB, ImageRequest(prompt="an owl"), idempotency_key="k-bob")
        assert again.replayed
        await service.grant(ADMIN, BOB, 1, reason="after the move")
        entries = await service.history(ADMIN, BOB)
        assert entries[0].entry_id > max(e.entry_id for e in before["history"][BOB.key])

    # A second copy would mix two histories: refused, nothing written.
    code, err = await asyncio.to_thread(_run, config, "db", "copy", sqlite_path)
    assert code == 1 and "only fills an empty database" in err
    sqlite_config = _config(tmp_path, {"path": str(tmp_path / "other.db")})
    code, err = await asyncio.to_thread(_run, sqlite_config, "db", "copy", sqlite_path)
    assert code == 1 and "url_env" in err


def _run(config: str, *argv: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main(["--config", config, *argv])
    return code, err.getvalue()


def _run_json(config: str, *argv: str) -> Any:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["--config", config, *argv, "--json"]) == 0
    return json.loads(out.getvalue())
