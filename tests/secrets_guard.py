"""pytest plugin: no secret the tests use may appear in a log line or an error message.

Loaded from ``tests/conftest.py`` (``pytest_plugins``). For the whole session it

- attaches a handler to the root logger at DEBUG and scans every record, with its traceback,
  as the record is emitted;
- scans the message (and the provider ``detail``) of every ``ImageGateError`` created;
- scans each test's captured stdout, stderr and log sections and its failure report.

What counts as a secret: every value registered with ``register_secret(value, label)`` (or the
``secrets_guard`` fixture's ``register``), and every environment variable whose name contains
KEY, TOKEN, SECRET or PASSWORD that a test set or changed (values present when the session
started are never read into the registry). Values shorter than 8 characters are ignored.

A leak fails the test it happened in (as a teardown error naming the secret's label, never
the value) and the session, with a summary at the end. ``SecretsGuard`` is also used on its
own by ``python -m bench.soak``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from core import errors as core_errors

MIN_SECRET_CHARS = 8
_SECRET_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD", re.IGNORECASE)


@dataclass(frozen=True)
class Leak:
    label: str  # what the secret is (never the value)
    where: str  # "log imagegate WARNING", "error ProviderAuthError", "stdout", ...
    test: str


class SecretsGuard:
    """A registry of secrets and a record of where any of them showed up."""

    def __init__(self) -> None:
        self.secrets: dict[str, str] = {}
        self.leaks: list[Leak] = []
        self.records = 0
        self.errors = 0
        self.test = ""
        self._pending: list[tuple[str, str]] = []  # (where, text) seen during the current test
        self._handler: _Capture | None = None
        self._unpatch: Callable[[], None] | None = None

    def register(self, value: str | None, label: str = "secret") -> None:
        """Treat ``value`` as a secret from now on (short or empty values are ignored)."""
        if value and len(value) >= MIN_SECRET_CHARS:
            self.secrets.setdefault(value, label)

    def scan(self, text: str, where: str, *, keep: bool = True) -> int:
        """Record a leak for each registered secret found in ``text``; returns how many."""
        if keep:
            self._pending.append((where, text))
        found = 0
        for secret, label in self.secrets.items():
            if secret in text:
                self.leaks.append(Leak(label, where, self.test))
                found += 1
        return found

    def rescan_pending(self) -> None:
        """Scan what the current test produced again, with secrets registered since."""
        pending, self._pending = self._pending, []
        known = {(leak.where, leak.label) for leak in self.leaks if leak.test == self.test}
        for where, text in pending:
            for secret, label in self.secrets.items():
                if secret in text and (where, label) not in known:
                    self.leaks.append(Leak(label, where, self.test))
                    known.add((where, label))

    def install(self, *, keep: bool = True) -> None:
        """Start watching: a DEBUG handler on the root logger and a hook on ImageGateError."""
        self._handler = _Capture(self, keep)
        root = logging.getLogger()
        root.addHandler(self._handler)
        root.setLevel(logging.DEBUG)
        self._unpatch = _watch_errors(self, keep)

    def uninstall(self) -> None:
        if self._handler is not None:
            logging.getLogger().removeHandler(self._handler)
            self._handler = None
        if self._unpatch is not None:
            self._unpatch()
            self._unpatch = None


class _Capture(logging.Handler):
    def __init__(self, guard: SecretsGuard, keep: bool) -> None:
        super().__init__(logging.DEBUG)
        self.guard = guard
        self.keep = keep
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # a bad format string is the logger's bug, not a leak
            text = str(record.msg)
        self.guard.records += 1
        self.guard.scan(text, f"log {record.name} {record.levelname}", keep=self.keep)


def _watch_errors(guard: SecretsGuard, keep: bool) -> Callable[[], None]:
    """Scan every ImageGateError's message and every ProviderError's detail on creation."""
    base, provider = core_errors.ImageGateError, core_errors.ProviderError
    base_init, provider_init = base.__init__, provider.__init__

    def base_wrapper(self: Any, message: str, *args: Any, **kwargs: Any) -> None:
        base_init(self, message, *args, **kwargs)
        guard.errors += 1
        guard.scan(str(message), f"error {type(self).__name__}", keep=keep)

    def provider_wrapper(self: Any, message: str, *args: Any, **kwargs: Any) -> None:
        provider_init(self, message, *args, **kwargs)
        guard.scan(str(self.detail), f"error {type(self).__name__}.detail", keep=keep)

    base.__init__ = base_wrapper  # type: ignore[method-assign]
    provider.__init__ = provider_wrapper  # type: ignore[method-assign]

    def undo() -> None:
        base.__init__ = base_init  # type: ignore[method-assign]
        provider.__init__ = provider_init  # type: ignore[method-assign]

    return undo


# --- the pytest plugin --------------------------------------------------------------------

GUARD = SecretsGuard()
_ENV_AT_START: dict[str, str] = {}


def register_secret(value: str | None, label: str = "secret") -> None:
    """Register a secret for the session (for tests that do not put it in the environment)."""
    GUARD.register(value, label)


@pytest.fixture
def secrets_guard() -> SecretsGuard:
    """The session's guard: ``secrets_guard.register(value, label)``."""
    return GUARD


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _register_env_secrets() -> None:
    for name, value in os.environ.items():
        if _SECRET_NAME.search(name) and _ENV_AT_START.get(name) != _digest(value):
            GUARD.register(value, f"${name}")


def pytest_sessionstart(session: pytest.Session) -> None:
    _ENV_AT_START.update({name: _digest(value) for name, value in os.environ.items()})
    GUARD.install()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    GUARD.test = item.nodeid
    GUARD._pending.clear()
    root = logging.getLogger()
    if root.level > logging.DEBUG:  # something raised it; records below would never exist
        root.setLevel(logging.DEBUG)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    yield
    _register_env_secrets()  # fixtures' monkeypatched variables are still set here


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    for title, text in report.sections:
        GUARD.scan(text, title, keep=True)
    if report.failed and report.longreprtext:
        GUARD.scan(report.longreprtext, f"failure report ({call.when})", keep=True)
    if call.when != "teardown":
        return
    _register_env_secrets()
    GUARD.rescan_pending()
    mine = sorted({(leak.label, leak.where) for leak in GUARD.leaks if leak.test == item.nodeid})
    if mine and report.passed:
        report.outcome = "failed"
        report.longrepr = "secret leaked: " + "; ".join(f"{lbl} in {w}" for lbl, w in mine)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not GUARD.leaks:
        return
    terminalreporter.section("secrets guard")
    seen = set()
    for leak in GUARD.leaks:
        key = (leak.label, leak.where, leak.test)
        if key not in seen:
            seen.add(key)
            terminalreporter.line(f"LEAK {leak.label} in {leak.where} during {leak.test}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    GUARD.uninstall()
    if GUARD.leaks and session.exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
