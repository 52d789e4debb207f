"""``imagegate db status|upgrade`` on both backends, as an operator runs them (in-process:
the commands are thin, and the database under them is tested in tests/core/test_db.py)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from core.cli import main


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
