"""A throwaway PostgreSQL server for tests and benchmarks: ``initdb`` into a temporary folder,
``pg_ctl start`` listening on a Unix socket in that folder only (no TCP port to collide with
another run), ``pg_ctl stop`` and delete. Uses the machine's PostgreSQL binaries (PATH, or
Debian's ``/usr/lib/postgresql/<version>/bin``); ``.ci/run`` installs them when missing.

As root (CI), the server runs as the ``postgres`` user (``runuser``), since PostgreSQL refuses
to run as root. ``durable=False`` (tests) turns fsync off: a crash of the test machine may
lose the throwaway data, nothing else changes.

The server lives no longer than the process that started it: a watchdog process (this file run
as a script) holds the read end of a pipe whose write end only the starting process has; when
that process ends without ``stop()`` (pytest killed), the pipe closes and the watchdog stops
the server and deletes its folder.
"""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

MISSING = (
    "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in"
    " /usr/lib/postgresql/*/bin: install them (Debian: apt-get install postgresql;"
    " .ci/run does this) to run the PostgreSQL half of the tests"
)


SHARED = "imagegate_tests"  # the database that holds every test's schema


def find_bin_dir() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``, newest version first; None if absent."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=_version, reverse=True)
    return Path(found[0]).parent if found else None


def _version(path: str) -> int:
    part = Path(path).parent.parent.name
    return int(part) if part.isdigit() else 0


class PostgresServer:
    """``start()`` it, make databases with ``create_database()``, ``stop()`` it."""

    def __init__(self, *, durable: bool = False, max_connections: int = 300) -> None:
        bin_dir = find_bin_dir()
        if bin_dir is None:
            raise RuntimeError(MISSING)
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="imagegate-pg-"))
        self.data = self.root / "data"
        self.durable = durable
        self.max_connections = max_connections
        self.running = False
        self._shared = False
        self._lifeline: int | None = None  # the pipe end the watchdog waits on
        self._watchdog: subprocess.Popen[bytes] | None = None

    def start(self) -> PostgresServer:
        """Create the cluster and start the server; returns self.

        Raises:
            RuntimeError: initdb or the server failed (with the server log's last lines).
        """
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "-N"
        )
        settings = {
            "listen_addresses": "''",
            "unix_socket_directories": f"'{self.root}'",
            "max_connections": str(self.max_connections),
            "shared_buffers": "'64MB'",
        }
        if not self.durable:
            settings.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        with open(self.data / "postgresql.conf", "a", encoding="utf-8") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        log = self.root / "server.log"
        try:
            self._run("pg_ctl", "-D", str(self.data), "-l", str(log), "-w", "-t", "60", "start")
        except RuntimeError as exc:
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{exc}\n{tail}") from None
        self.running = True
        self._start_watchdog()
        return self

    def _start_watchdog(self) -> None:
        """Tie the server to this process (see the module docstring). The write end is not
        inheritable, so no other child of this process keeps the server alive."""
        read_end, self._lifeline = os.pipe()
        stop = self._command("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        self._watchdog = subprocess.Popen(
            [sys.executable, "-I", __file__, "--watch", str(read_end), str(self.root), *stop],
            pass_fds=(read_end,),
            start_new_session=True,  # a Ctrl-C to pytest's process group is not for it
            stdin=subprocess.DEVNULL,
        )
        os.close(read_end)

    def stop(self) -> None:
        """Stop the server (at once: its data is thrown away) and delete its folder."""
        if self.running:
            self.running = False
            try:
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
            except RuntimeError:
                pass
        shutil.rmtree(self.root, ignore_errors=True)
        if self._lifeline is not None:  # the watchdog finds nothing left to do, and exits
            os.close(self._lifeline)
            self._lifeline = None
        if self._watchdog is not None:
            self._watchdog.wait(60)
            self._watchdog = None

    def url(self, database: str = "postgres", schema: str | None = None) -> str:
        """A ``postgresql://`` URL for ``database`` over the server's Unix socket; with
        ``schema``, its connections find their tables there (``search_path``)."""
        url = f"postgresql://postgres@/{database}?host={self.root}"
        return f"{url}&search_path={schema}" if schema else url

    def create_database(self) -> str:
        """A new, empty database; returns its URL. (A schema of its own in one shared
        database: a few ms, where CREATE DATABASE takes a quarter of a second.)"""
        schema = f"t_{uuid.uuid4().hex[:16]}"
        if not self._shared:
            self.psql(f"CREATE DATABASE {SHARED}")
            self._shared = True
        self.psql(f"CREATE SCHEMA {schema}", SHARED)
        return self.url(SHARED, schema)

    def drop_database(self, url: str) -> None:
        """Throw away a database made by ``create_database`` (its open connections may stay)."""
        schema = url.rsplit("search_path=", 1)[1]
        self.psql(f"DROP SCHEMA IF EXISTS {schema} CASCADE", SHARED)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run one SQL command with ``psql``; returns its output (unaligned, no headers)."""
        return self._run(
            "psql", "-X", "-q", "-At", "-h", str(self.root), "-U", "postgres", "-d", database,
            "-v", "ON_ERROR_STOP=1", "-c", sql,
        )  # fmt: skip

    def _command(self, tool: str, *args: str) -> list[str]:
        command = [str(self.bin / tool), *args]
        if tool == "psql" and not (self.bin / tool).exists():
            command[0] = shutil.which("psql") or "psql"
        if os.geteuid() == 0 and tool != "psql":
            command = ["runuser", "-u", "postgres", "--", *command]
        return command

    def _run(self, tool: str, *args: str) -> str:
        done = subprocess.run(
            self._command(tool, *args), capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr.strip()[-1500:]}")
        return done.stdout


def _watch(lifeline: int, root: Path, stop: list[str]) -> None:
    """Wait until the pipe's other end closes (its holder stopped the server, or died), then
    stop the server if it still runs and delete its folder."""
    with os.fdopen(lifeline, "rb") as pipe:
        pipe.read()
    if (root / "data" / "postmaster.pid").exists():
        subprocess.run(stop, capture_output=True, timeout=120)
    shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__" and sys.argv[1:2] == ["--watch"]:
    _watch(int(sys.argv[2]), Path(sys.argv[3]), sys.argv[4:])
