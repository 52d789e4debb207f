"""The throwaway PostgreSQL server of the tests goes away with the process that started it,
even when that process is killed before it can stop the server (pytest killed mid-run)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tests.pgserver import find_bin_dir

ROOT = Path(__file__).resolve().parents[1]
STARTER = (
    "import time\n"
    "from tests.pgserver import PostgresServer\n"
    "print(PostgresServer().start().root, flush=True)\n"
    "time.sleep(600)\n"
)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.slow
@pytest.mark.skipif(find_bin_dir() is None, reason="no PostgreSQL server binaries")
def test_the_server_stops_when_its_starter_is_killed():
    starter = subprocess.Popen(
        [sys.executable, "-c", STARTER], cwd=ROOT, stdout=subprocess.PIPE, text=True
    )
    assert starter.stdout is not None
    root = Path(starter.stdout.readline().strip())
    postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
    try:
        assert _alive(postmaster)
        starter.kill()  # SIGKILL: no stop(), no atexit, no finally
        starter.wait()
        deadline = time.monotonic() + 30  # "a few seconds"; generous for a loaded machine
        while _alive(postmaster) or root.exists():
            assert time.monotonic() < deadline, "the server outlived the process that started it"
            time.sleep(0.05)
    finally:
        starter.kill()
        if _alive(postmaster):  # the watchdog failed: do not leave the server behind
            os.kill(postmaster, signal.SIGQUIT)
        shutil.rmtree(root, ignore_errors=True)
