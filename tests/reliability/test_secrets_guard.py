"""The secrets guard itself (``tests/secrets_guard.py``): it finds what it must find.

Unit checks of ``SecretsGuard``, and one end-to-end run of pytest on a throwaway test that
logs a registered secret: that run must fail and name the secret's label, never its value.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from core.errors import ProviderAuthError
from tests.secrets_guard import SecretsGuard

ROOT = Path(__file__).resolve().parents[2]


def test_guard_sees_log_records_tracebacks_and_error_messages():
    guard = SecretsGuard()
    guard.register("sk-live-0123456789", "provider key")
    guard.register("short", "ignored: too short to be a secret")
    guard.install(keep=False)
    try:
        logging.getLogger("imagegate.test").debug("calling with %s", "sk-live-0123456789")
        try:
            raise RuntimeError("token sk-live-0123456789 in an exception")
        except RuntimeError:
            logging.getLogger("other").exception("failed")
        ProviderAuthError("refused", provider="x", detail="body echoed sk-live-0123456789")
        logging.getLogger("clean").warning("nothing secret here, short")
    finally:
        guard.uninstall()
    places = sorted(leak.where for leak in guard.leaks)
    assert places == [
        "error ProviderAuthError.detail",
        "log imagegate.test DEBUG",
        "log other ERROR",
    ]
    assert all(leak.label == "provider key" for leak in guard.leaks)


def test_the_session_guard_is_installed(secrets_guard):
    assert any(isinstance(h, logging.Handler) and h.__class__.__name__ == "_Capture"
               for h in logging.getLogger().handlers)  # fmt: skip
    assert secrets_guard.records > 0


def test_a_leaking_test_fails_the_run(tmp_path):
    (tmp_path / "conftest.py").write_text('pytest_plugins = ["tests.secrets_guard"]\n')
    (tmp_path / "test_leak.py").write_text(
        textwrap.dedent(
            """
            import logging

            def test_logs_its_key(monkeypatch):
                monkeypatch.setenv("SOME_PROVIDER_API_KEY", "sk-leaky-9876543210")
                logging.getLogger("imagegate").debug("using key sk-leaky-9876543210")

            def test_clean():
                logging.getLogger("imagegate").info("all good")
            """
        )
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "no:asyncio",
            str(tmp_path),
        ],  # fmt: skip
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0, run.stdout
    assert "$SOME_PROVIDER_API_KEY in log imagegate DEBUG" in run.stdout, run.stdout
    assert "2 passed, 1 error" in run.stdout, run.stdout  # the clean test is not blamed
    verdicts = [line for line in run.stdout.splitlines() if "LEAK" in line or "leaked" in line]
    assert verdicts and not any("sk-leaky" in line for line in verdicts)  # label, never value
